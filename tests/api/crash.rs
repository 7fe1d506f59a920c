//! `kill -9` while the EHR holds a kick-off open: after the restart, the partner's retry makes no second
//! export at the EHR and gets a documented answer; a new export goes only when the partner asks for it.

use crate::helpers::{binary_config, seed, spawn_serve};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An EHR that holds its first kick-off open (as if it were slow to answer) and accepts later ones at
/// once; it counts every kick-off it receives.
async fn holding_ehr() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let kickoffs = Arc::new(AtomicUsize::new(0));
    let counted = kickoffs.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if !String::from_utf8_lossy(&head).contains("$export") {
                    let _ = socket
                        .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                    return;
                }
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Hold the first one open until the gateway is gone.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                let answer = format!(
                    "HTTP/1.1 202 Accepted\r\nContent-Location: http://127.0.0.1:{port}/status/2\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, kickoffs)
}

#[tokio::test]
async fn a_gateway_killed_while_the_ehr_answers_a_kickoff_never_sends_it_twice_unasked() {
    let (ehr_port, kickoffs) = holding_ehr().await;
    let dir = tempfile::tempdir().unwrap();
    // Long enough that the EHR, not the gateway's timeout, ends the held kick-off.
    let config = binary_config(
        dir.path(),
        ehr_port,
        "",
        "[upstream]\nrequest_timeout_secs = 30.0",
    );
    let route = "/fhir/R4/slow-ehr/Development/Group/example-group-id/$export";
    let client = reqwest::Client::new();

    let (mut first, port, _log) = spawn_serve(&config);
    let url = format!("http://127.0.0.1:{port}{route}");
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.post(url).json(&seed()).send().await }
    });
    for _ in 0..500 {
        if kickoffs.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        kickoffs.load(Ordering::SeqCst),
        1,
        "the EHR holds the kick-off"
    );
    first.kill().unwrap(); // SIGKILL: no shutdown, no record of the EHR's answer.
    first.wait().unwrap();
    assert!(
        held.await.unwrap().is_err(),
        "the partner's request died with the gateway"
    );

    let (mut second, port, _log) = spawn_serve(&config);
    let url = format!("http://127.0.0.1:{port}{route}");
    let retry = client.post(&url).json(&seed()).send().await.unwrap();

    assert_eq!(retry.status(), 409);
    let outcome: serde_json::Value = retry.json().await.unwrap();
    assert_eq!(outcome["issue"][0]["code"], "conflict");
    let said = outcome["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        said.contains("may already have accepted the export"),
        "{said}"
    );
    assert!(said.contains("Prefer: retry-unknown-kickoff"), "{said}");
    assert_eq!(
        kickoffs.load(Ordering::SeqCst),
        1,
        "exactly one upstream kick-off"
    );

    let asked = client
        .post(&url)
        .header("Prefer", "retry-unknown-kickoff")
        .json(&seed())
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 202);
    assert_eq!(kickoffs.load(Ordering::SeqCst), 2);
    second.kill().unwrap();
    let _ = second.wait();
}
