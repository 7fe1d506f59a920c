//! Graceful shutdown of the real binary: SIGTERM (or SIGINT) mid-download lets the download finish
//! within `[server] shutdown_grace_secs`, refuses new connections, and exits 0.

use crate::helpers::{binary_config, seed, spawn_serve};
use std::process::{Child, Command};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHUNKS: usize = 10;
const CHUNK_GAP: Duration = Duration::from_millis(250);

fn line(n: usize) -> String {
    format!("{{\"resourceType\":\"Patient\",\"id\":\"p{n}\"}}\n")
}

/// A small EHR: kick-off 202, status 200 with a one-file manifest, and the file sent slowly.
async fn slow_ehr() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&head).to_string();
                let target = request.split(' ').nth(1).unwrap_or_default().to_owned();
                let base = format!("http://127.0.0.1:{port}");
                if target.contains("$export") {
                    let answer = format!(
                        "HTTP/1.1 202 Accepted\r\nContent-Location: {base}/status/1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                } else if target.starts_with("/status/") {
                    let body = format!(
                        "{{\"transactionTime\":\"2026-01-01T00:00:00Z\",\"request\":\"{base}/Group/g/$export\",\"requiresAccessToken\":false,\"output\":[{{\"type\":\"Patient\",\"url\":\"{base}/files/patients.ndjson\"}}],\"error\":[]}}"
                    );
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                } else {
                    let total: usize = (0..CHUNKS).map(|n| line(n).len()).sum();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+ndjson\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
                    );
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    for n in 0..CHUNKS {
                        if socket.write_all(line(n).as_bytes()).await.is_err() {
                            return;
                        }
                        let _ = socket.flush().await;
                        tokio::time::sleep(CHUNK_GAP).await;
                    }
                }
            });
        }
    });
    port
}

struct Gateway {
    child: Child,
    port: u16,
    stderr: std::sync::mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Starts the fhirgate binary against `ehr_port`; learns its port from its JSON log.
fn start_gateway(ehr_port: u16, grace_secs: f64) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let config = binary_config(
        dir.path(),
        ehr_port,
        &format!("shutdown_grace_secs = {grace_secs}"),
        "",
    );
    let (child, port, stderr) = spawn_serve(&config);
    Gateway {
        child,
        port,
        stderr,
        _dir: dir,
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < within,
            "the gateway did not exit in time"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kicks off, polls to completion, and opens the file; returns the open download.
async fn open_download(gateway: &Gateway) -> reqwest::Response {
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", gateway.port);
    let kick = client
        .post(format!(
            "{base}/fhir/R4/slow-ehr/Development/Group/example-group-id/$export"
        ))
        .json(&seed())
        .send()
        .await
        .unwrap();
    assert_eq!(kick.status(), 202);
    let location = kick.headers()["Content-Location"]
        .to_str()
        .unwrap()
        .replace("https://gateway.example", &base);
    let status = client.get(&location).send().await.unwrap();
    assert_eq!(status.status(), 200);
    let file = location.replace("export-status", "export-file") + "/0";
    let download = client.get(file).send().await.unwrap();
    assert_eq!(download.status(), 200);
    download
}

async fn sigterm_mid_download(signal_name: &str) {
    let ehr = slow_ehr().await;
    let mut gateway = start_gateway(ehr, 20.0);
    let mut download = open_download(&gateway).await;
    let first = download.chunk().await.unwrap().expect("a first chunk");

    signal(gateway.child.id(), signal_name);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", gateway.port)).await;
    assert!(refused.is_err(), "no new connections after {signal_name}");

    let mut body = first.to_vec();
    while let Some(chunk) = download.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let expected: String = (0..CHUNKS).map(line).collect();
    assert_eq!(
        String::from_utf8(body).unwrap(),
        expected,
        "the download finished whole"
    );

    let status = wait_exit(&mut gateway.child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    let logs: Vec<String> = gateway.stderr.try_iter().collect();
    assert!(logs.iter().any(|l| l.contains(signal_name)), "{logs:?}");
    assert!(logs.iter().any(|l| l.contains("Stopped.")), "{logs:?}");
}

#[tokio::test]
async fn sigterm_mid_download_lets_the_download_finish_then_exits_0() {
    sigterm_mid_download("TERM").await;
}

#[tokio::test]
async fn sigint_is_as_graceful_as_sigterm() {
    sigterm_mid_download("INT").await;
}

#[tokio::test]
async fn a_download_longer_than_the_grace_period_is_cut_and_the_gateway_still_exits_0() {
    let ehr = slow_ehr().await;
    let mut gateway = start_gateway(ehr, 1.0);
    let mut download = open_download(&gateway).await;
    download.chunk().await.unwrap().expect("a first chunk");
    let started = std::time::Instant::now();

    signal(gateway.child.id(), "TERM");
    let status = wait_exit(&mut gateway.child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_millis(CHUNK_GAP.as_millis() as u64 * CHUNKS as u64),
        "it did not wait for the whole download"
    );
    let mut rest = Ok(Some(bytes::Bytes::new()));
    while let Ok(Some(_)) = rest {
        rest = download.chunk().await;
    }
    assert!(
        rest.is_err(),
        "the cut download is an error, not a short file passed off as whole"
    );
}
