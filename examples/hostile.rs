//! Rounds of hostile traffic against a running gateway, printing its resident memory after each:
//! refused envelopes, random job ids, forged tokens and assertions with random `kid`s, oversized and
//! odd headers, control characters in admin filters, unknown routes, and some valid kick-offs.
//!
//! `cargo run --release --example hostile -- <gateway base URL> <gateway pid> [rounds] [requests] [key]`
//! (`benches/memory.sh` runs it against a fresh gateway).

use futures_util::StreamExt;
use std::time::Instant;

fn rss_mib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A cheap pseudo-random sequence (no need for a real one).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn hex(&mut self, n: usize) -> String {
        (0..n).map(|_| format!("{:x}", self.next() % 16)).collect()
    }
    fn uuid(&mut self) -> String {
        format!(
            "{}-{}-4{}-a{}-{}",
            self.hex(8),
            self.hex(4),
            self.hex(3),
            self.hex(3),
            self.hex(12)
        )
    }
}

fn request(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    i: u64,
    rng: &mut Rng,
) -> reqwest::RequestBuilder {
    let fhir = format!("{base}/fhir/R4/bench/Production");
    let partner = |r: reqwest::RequestBuilder| r.header("Authorization", format!("Bearer {key}"));
    match i % 10 {
        // An envelope with junk in it.
        0 => partner(client.post(format!("{fhir}/Group/g/$export")))
            .header("Content-Type", "application/json")
            .body(format!(
                r#"{{"Meta":{{"DataModel":"{}","EventType":"group-export","Logs":[{{"ID":"{}"}}]}},"id":"g","_type":"{}"}}"#,
                rng.hex(12),
                rng.uuid(),
                rng.hex(40)
            )),
        // A valid kick-off under a new Log ID.
        1 => partner(client.post(format!("{fhir}/Group/g/$export")))
            .header("Content-Type", "application/json")
            .body(format!(
                r#"{{"Meta":{{"DataModel":"FHIR Bulk Data Access","EventType":"group-export","Logs":[{{"ID":"{}"}}]}},"id":"g"}}"#,
                rng.uuid()
            )),
        // Status, files and pages of jobs that do not exist.
        2 => partner(client.get(format!("{fhir}/export-status/{}", rng.uuid()))),
        3 => partner(client.get(format!(
            "{fhir}/export-file/{}/{}",
            rng.uuid(),
            rng.next() % 100
        ))),
        4 => partner(client.get(format!(
            "{fhir}/export-attachment/{}/{}/Binary/{}",
            rng.uuid(),
            rng.hex(16),
            rng.hex(8)
        ))),
        // Forged bearer tokens and client assertions with random kids.
        5 => client
            .get(format!("{fhir}/metadata"))
            .header("Authorization", format!("Bearer {}", rng.hex(64)))
            .header("X-Request-ID", rng.hex(36)),
        6 => client
            .post(format!("{base}/auth/token"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&scope=system%2F*.read&client_assertion=eyJhbGciOiJFUzM4NCIsImtpZCI6Ij{}In0.eyJpc3MiOiJ4In0.{}",
                rng.hex(20),
                rng.hex(96)
            )),
        // Control characters in admin filters, without and with a wrong key.
        7 => client
            .get(format!("{base}/admin/logs?source=%00{}&eventType=%01", rng.hex(8)))
            .header("Authorization", format!("Bearer {}", rng.hex(32))),
        // Unknown routes, long odd headers.
        8 => client
            .get(format!("{base}/{}/{}?{}={}", rng.hex(10), rng.hex(30), rng.hex(5), rng.hex(200)))
            .header(format!("x-{}", rng.hex(12)), rng.hex(2000)),
        _ => partner(client.get(format!(
            "{fhir}/Group/{}/$export?_type={}&_since={}",
            rng.hex(70),
            rng.hex(10),
            rng.hex(5)
        )))
        .header("Prefer", "respond-async"),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(base), Some(pid)) = (args.get(1), args.get(2)) else {
        eprintln!(
            "usage: hostile <gateway base URL> <gateway pid> [rounds] [requests per round] [partner API key]"
        );
        std::process::exit(2);
    };
    let rounds: u32 = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(5);
    let per_round: u64 = args.get(4).and_then(|v| v.parse().ok()).unwrap_or(110_000);
    let key = args.get(5).cloned().unwrap_or_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("a client");
    println!("round 0: RSS {:.1} MiB", rss_mib(pid));
    let mut figures = Vec::new();
    for round in 1..=rounds {
        let started = Instant::now();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(round));
        let requests: Vec<_> = (0..per_round)
            .map(|i| request(&client, base, &key, i, &mut rng))
            .collect();
        let mut statuses = std::collections::BTreeMap::new();
        let mut answers = futures_util::stream::iter(requests)
            .map(|r| async move { r.send().await.map(|r| r.status().as_u16()).unwrap_or(0) })
            .buffer_unordered(32);
        while let Some(status) = answers.next().await {
            *statuses.entry(status).or_insert(0u64) += 1;
        }
        let rss = rss_mib(pid);
        figures.push(rss);
        println!(
            "round {round}: {per_round} requests in {:.1} s, RSS {rss:.1} MiB, statuses {statuses:?}",
            started.elapsed().as_secs_f64()
        );
    }
    if figures.len() >= 5 {
        let (second, fifth) = (figures[1], figures[4]);
        println!(
            "round 5 / round 2 RSS: {:.3} (target within 10%: <= 1.10)",
            fifth / second
        );
    }
}
