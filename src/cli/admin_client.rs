//! `fhirgate logs` and `fhirgate jobs`: the admin API for a person at a terminal, as tables (or the
//! API's JSON with `--json`).

use serde_json::Value;
use std::fmt::Write as _;

/// Where the admin API is and the key to use.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    pub url: String,
    pub key: String,
}

/// Why a command could not show its answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the gateway at {0}: is it running, and is --url right?")]
    Unreachable(String),
    #[error("the gateway answered HTTP {status}: {why}")]
    Refused { status: u16, why: String },
    #[error("the gateway's answer is not JSON")]
    NotJson,
}

/// GETs `path` with `query` from the admin API.
pub async fn get(
    target: &AdminTarget,
    path: &str,
    query: &[(&str, String)],
) -> Result<Value, ClientError> {
    let base = target.url.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|_| ClientError::Unreachable(base.to_owned()))?;
    let response = client
        .get(format!("{base}{path}"))
        .query(query)
        .bearer_auth(&target.key)
        .header("Accept", "application/json")
        .send()
        .await
        .map_err(|_| ClientError::Unreachable(base.to_owned()))?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.map_err(|_| ClientError::NotJson)?;
    if !(200..300).contains(&status) {
        return Err(ClientError::Refused {
            status,
            why: diagnostics(&body),
        });
    }
    Ok(body)
}

/// An OperationOutcome's issues, one line.
fn diagnostics(body: &Value) -> String {
    let issues: Vec<String> = body["issue"]
        .as_array()
        .map(|issues| {
            issues
                .iter()
                .map(|i| {
                    let text = i["diagnostics"].as_str().unwrap_or("(no diagnostics)");
                    match i["expression"][0].as_str() {
                        // Diagnostics usually name their field already.
                        Some(e) if !text.starts_with(e) => format!("{e}: {text}"),
                        _ => text.to_owned(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if issues.is_empty() {
        "(no details)".to_owned()
    } else {
        issues.join("; ")
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() != 0.0)
            .map_or_else(|| n.to_string(), |f| format!("{f:.1}")),
        other => other.to_string(),
    }
}

/// Renders rows under a header, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&mut out, header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(&mut out, row.clone());
    }
    out
}

fn log_rows(entries: &Value, upstream: bool) -> Vec<Vec<String>> {
    entries
        .as_array()
        .map(|es| {
            es.iter()
                .map(|e| {
                    let mut row = vec![cell(&e["time"]), cell(&e["logId"])];
                    if upstream {
                        row.push(cell(&e["route"]));
                    } else {
                        row.push(cell(&e["eventType"]));
                        row.push(cell(&e["source"]));
                    }
                    row.push(format!(
                        "{}/{}",
                        cell(&e["destination"]),
                        cell(&e["environment"])
                    ));
                    if !upstream {
                        row.push(cell(&e["gatewayStatus"]));
                    }
                    row.extend([
                        cell(&e["upstreamStatus"]),
                        cell(&e["errorCode"]),
                        cell(&e["durationMs"]),
                        cell(&e["jobId"]),
                    ]);
                    if upstream {
                        row.push(cell(&e["upstreamRequestId"]));
                    }
                    row
                })
                .collect()
        })
        .unwrap_or_default()
}

const REQUEST_HEADER: [&str; 10] = [
    "TIME",
    "LOG ID",
    "EVENT",
    "SOURCE",
    "DESTINATION",
    "STATUS",
    "UPSTREAM",
    "ERROR",
    "MS",
    "JOB",
];
const UPSTREAM_HEADER: [&str; 9] = [
    "TIME",
    "LOG ID",
    "OPERATION",
    "DESTINATION",
    "UPSTREAM",
    "ERROR",
    "MS",
    "JOB",
    "EHR REQUEST ID",
];

/// A page of `GET /admin/logs`.
pub fn render_log_page(page: &Value, kind: Option<&str>) -> String {
    let upstream = kind == Some("upstream");
    let header: &[&str] = if upstream {
        &UPSTREAM_HEADER
    } else {
        &REQUEST_HEADER
    };
    let mut out = table(header, &log_rows(&page["entries"], upstream));
    if let Some(next) = page["next"].as_str() {
        let offset = next.rsplit("offset=").next().unwrap_or_default();
        let _ = writeln!(out, "(more: add --offset {offset})");
    }
    out
}

/// `GET /admin/logs/{logId}`.
pub fn render_log_detail(detail: &Value) -> String {
    let mut out = format!("Log ID {}\n\nRequests\n", cell(&detail["logId"]));
    out.push_str(&table(
        &REQUEST_HEADER,
        &log_rows(&detail["requests"], false),
    ));
    out.push_str("\nUpstream calls\n");
    out.push_str(&table(
        &UPSTREAM_HEADER,
        &log_rows(&detail["attempts"], true),
    ));
    out.push_str("\nJobs\n");
    out.push_str(&render_job_rows(&detail["jobs"]));
    out
}

const JOB_HEADER: [&str; 9] = [
    "JOB",
    "STATE",
    "SOURCE",
    "DESTINATION",
    "EVENT",
    "ATTEMPTS",
    "UPSTREAM",
    "NEXT POLL",
    "UPDATED",
];

fn render_job_rows(jobs: &Value) -> String {
    let rows: Vec<Vec<String>> = jobs
        .as_array()
        .map(|js| {
            js.iter()
                .map(|j| {
                    vec![
                        cell(&j["id"]),
                        cell(&j["state"]),
                        cell(&j["source"]),
                        format!("{}/{}", cell(&j["destination"]), cell(&j["environment"])),
                        cell(&j["eventType"]),
                        cell(&j["attempts"]),
                        cell(&j["lastUpstreamStatus"]),
                        cell(&j["nextPollAt"]),
                        cell(&j["updatedAt"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&JOB_HEADER, &rows)
}

/// A page of `GET /admin/jobs`.
pub fn render_job_page(page: &Value) -> String {
    let mut out = render_job_rows(&page["jobs"]);
    if let Some(next) = page["next"].as_str() {
        let offset = next.rsplit("offset=").next().unwrap_or_default();
        let _ = writeln!(out, "(more: add --offset {offset})");
    }
    out
}

/// `GET /admin/jobs/{jobId}`.
pub fn render_job_detail(job: &Value) -> String {
    let mut out = String::new();
    for (label, key) in [
        ("Job", "id"),
        ("State", "state"),
        ("Log ID", "logId"),
        ("Source", "source"),
        ("Destination", "destination"),
        ("Environment", "environment"),
        ("Event type", "eventType"),
        ("Kick-off attempts", "attempts"),
        ("Last upstream status", "lastUpstreamStatus"),
        ("Error", "errorCode"),
        ("Progress", "progress"),
        ("Next poll", "nextPollAt"),
        ("Last polled", "lastPolledAt"),
        ("Poll failures", "pollFailures"),
        ("Notification", "notifyState"),
        ("Created", "createdAt"),
        ("Updated", "updatedAt"),
    ] {
        let _ = writeln!(out, "{label:<22}{}", cell(&job[key]));
    }
    out.push_str("\nKick-off attempts\n");
    let attempts: Vec<Vec<String>> = job["kickoffAttempts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| {
                    vec![
                        cell(&a["attemptId"]),
                        cell(&a["startedAt"]),
                        cell(&a["outcome"]),
                        cell(&a["upstreamStatus"]),
                        cell(&a["errorCode"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&table(
        &["ATTEMPT", "STARTED", "OUTCOME", "UPSTREAM", "ERROR"],
        &attempts,
    ));
    out.push_str("\nUpstream calls (newest first)\n");
    out.push_str(&table(
        &UPSTREAM_HEADER,
        &log_rows(&job["upstreamCalls"], true),
    ));
    out
}
