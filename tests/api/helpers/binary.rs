//! The real `fhirgate` binary, run as a child process.

use super::repo;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Runs `fhirgate serve --config <config>` (JSON logs on stderr) and learns its port from its log;
/// the receiver yields its later log lines.
pub fn spawn_serve(config: &std::path::Path) -> (Child, u16, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fhirgate"))
        .args(["serve", "--config"])
        .arg(config)
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
