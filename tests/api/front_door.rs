//! The front door below HTTP: slow heads on kept-alive connections, oversized heads, the connection
//! cap, and a flood of slow connections against a process with 1,024 file descriptors.

use crate::helpers::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n";

async fn connect(address: &str) -> TcpStream {
    TcpStream::connect(address.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until a whole (small) response head and body seem there; returns what arrived.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(str::to_owned)
                        })
                        .and_then(|v| v.trim().parse::<usize>().ok());
                    if length.is_some_and(|n| body.len() >= n) {
                        break;
                    }
                }
            }
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Whether the server closed the connection within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn a_second_request_whose_head_trickles_in_is_cut_at_the_header_timeout() {
    let app = TestApp::spawn_configured("", |s| s.server.header_timeout_secs = 1.0).await;
    let mut stream = connect(&app.address).await;
    stream.write_all(HEALTHZ).await.unwrap();
    assert!(read_answer(&mut stream).await.starts_with("HTTP/1.1 200"));

    // The second request on the kept-alive connection: one byte every 200 ms, never finished.
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for b in b"GET /healthz HTTP/1.1\r\nX-Slow: "
            .iter()
            .chain(b"a".repeat(100).iter())
        {
            if writer.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(8), reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => continue,
            Err(_) => break false,
        }
    };
    trickle.abort();

    assert!(closed, "the slow head was never cut");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "cut near the 1 s header timeout, not left open ({:?})",
        started.elapsed()
    );
    assert_eq!(app.get(app.url("/healthz")).await.status(), 200);
}

#[tokio::test]
async fn a_header_name_of_64_kib_is_answered_431_and_nothing_panics() {
    let app = TestApp::spawn().await;
    let mut stream = connect(&app.address).await;
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'A', 70_000));
    request.extend_from_slice(b": v\r\n\r\n");
    // The gateway may stop reading before all of it has gone.
    let _ = stream.write_all(&request).await;

    let answer = read_answer(&mut stream).await;

    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(answer.contains("\"code\":\"too-long\""), "{answer}");
    assert_eq!(app.get(app.url("/healthz")).await.status(), 200);
}

#[tokio::test]
async fn past_max_connections_the_stalled_connection_makes_room_and_busy_ones_are_kept() {
    let app = TestApp::spawn_configured("", |s| s.server.max_connections = Some(3)).await;
    // Three connections, each with a head that stopped arriving.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut s = connect(&app.address).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: a")
            .await
            .unwrap();
        stalled.push(s);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A fourth connection is served: the one stalled longest made room.
    let mut fresh = connect(&app.address).await;
    fresh.write_all(HEALTHZ).await.unwrap();
    assert!(read_answer(&mut fresh).await.starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut stalled[0], Duration::from_secs(3)).await,
        "the oldest stalled connection was closed"
    );
    // …and it keeps being served on its kept-alive connection.
    fresh.write_all(HEALTHZ).await.unwrap();
    assert!(read_answer(&mut fresh).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn when_every_connection_is_busy_a_new_one_gets_503_at_once() {
    let app = TestApp::spawn_configured("", |s| s.server.max_connections = Some(2)).await;
    // Two requests in progress: token requests whose bodies are still on their way.
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut s = connect(&app.address).await;
        let body = "grant_type=client_credentials";
        s.write_all(
            format!(
                "POST /auth/token HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
                body.len() + 10_000
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        s.write_all(body.as_bytes()).await.unwrap();
        busy.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut refused = connect(&app.address).await;
    let answer = read_answer(&mut refused).await;

    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    drop(busy);
}

/// This process's open-file limit.
fn own_file_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(1024)
}

/// One request answered, then a second head that stops after a few bytes; the stream is kept.
async fn slow_connection(port: u16) -> Option<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(HEALTHZ).await.ok()?;
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    if n == 0 {
        return None;
    }
    s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: a")
        .await
        .ok()?;
    Some(s)
}

#[tokio::test]
async fn with_1024_file_descriptors_healthz_keeps_answering_through_3000_slow_connections() {
    let dir = tempfile::tempdir().unwrap();
    let config = binary_config(
        dir.path(),
        9,
        "header_timeout_secs = 2.0\nkeep_alive_secs = 30.0",
        "",
    );
    let (mut child, port, _logs) = spawn_serve_limited(&config, 1024);
    // Leave this test process room for its own sockets.
    let flood = 3000.min(own_file_limit().saturating_sub(200));

    let mut opened = Vec::new();
    for batch in 0..flood.div_ceil(250) {
        let n = 250.min(flood - batch * 250);
        let streams = futures_util::future::join_all((0..n).map(|_| slow_connection(port))).await;
        opened.extend(streams.into_iter().flatten());
    }
    let mut probes_ok = 0;
    for _ in 0..40 {
        let mut probe = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        probe.write_all(HEALTHZ).await.unwrap();
        if read_answer(&mut probe).await.starts_with("HTTP/1.1 200") {
            probes_ok += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every slow connection still open is cut by the 2 s header timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut still_open = 0;
    for s in opened.iter_mut().take(200) {
        if !closed_within(s, Duration::from_millis(20)).await {
            still_open += 1;
        }
    }
    let _ = child.kill();
    let _ = child.wait();

    assert!(flood >= 1500, "this machine allows only {flood} sockets");
    assert_eq!(
        probes_ok, 40,
        "every /healthz probe answered during the flood"
    );
    assert_eq!(
        still_open, 0,
        "no slow connection outlives the header timeout"
    );
}

#[tokio::test]
async fn a_40_kib_body_sent_after_100_continue_is_a_body_not_a_head() {
    let app = TestApp::spawn().await;
    let mut stream = connect(&app.address).await;
    let body = format!(
        r#"{{"Meta":{{"DataModel":"FHIR Bulk Data Access","EventType":"group-export"}},"id":"g","note":"{}"}}"#,
        "x".repeat(40 * 1024)
    );
    stream
        .write_all(
            format!(
                "POST /fhir/R4/spec-ehr/Development/Group/g/$export HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut interim = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut interim))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&interim[..n]).starts_with("HTTP/1.1 100"));

    stream.write_all(body.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await;

    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "the envelope's own error: {answer}"
    );
    assert!(answer.contains("note"), "{answer}");
    stream.write_all(HEALTHZ).await.unwrap();
    assert!(read_answer(&mut stream).await.starts_with("HTTP/1.1 200"));
}
