//! The real `fhirgate` binary, run as a child process.

use super::repo;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Runs `fhirgate serve --config <config>` (JSON logs on stderr) and learns its port from its log;
/// the receiver yields its later log lines.
pub fn spawn_serve(config: &std::path::Path) -> (Child, u16, std::sync::mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fhirgate"));
    cmd.args(["serve", "--config"]).arg(config);
    spawn(cmd)
}

/// As [`spawn_serve`], with the process's open-file limit lowered to `nofile` (as a default Linux
/// process has 1,024).
pub fn spawn_serve_limited(
    config: &std::path::Path,
    nofile: u32,
) -> (Child, u16, std::sync::mpsc::Receiver<String>) {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -n {nofile} && exec \"$0\" serve --config \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_fhirgate"))
        .arg(config);
    spawn(cmd)
}

fn spawn(mut cmd: Command) -> (Child, u16, std::sync::mpsc::Receiver<String>) {
    let mut child = cmd
        .current_dir(repo())
        .env_remove("RUST_LOG")
        .env_remove("FHIRGATE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let port = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the gateway logs its port");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if let Some(port) = v["port"].as_u64() {
            break port as u16;
        }
    };
    (child, port, rx)
}

/// Writes a config for the binary in `dir`: a SQLite store there, JSON logs, one `slow-ehr` destination
/// on `ehr_port`; `server_extra` and `extra` go at the end of `[server]` and of the file.
pub fn binary_config(
    dir: &std::path::Path,
    ehr_port: u16,
    server_extra: &str,
    extra: &str,
) -> std::path::PathBuf {
    let config = dir.join("fhirgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
public_url = "https://gateway.example"
workers = 1
{server_extra}
[store]
url = "sqlite://{store}"
[log]
format = "json"
level = "info"
[[destinations]]
slug = "slow-ehr"
name = "A local EHR"
vendor = "bulk-data"
[destinations.environments.Development]
base_url = "http://127.0.0.1:{ehr_port}"
allow_private_addresses = true
{extra}
"#,
            store = dir.join("jobs.db").display()
        ),
    )
    .expect("write the config");
    config
}
