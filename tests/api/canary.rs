//! A full flow with canary secrets and a canary patient id, JSON logs at debug level: no canary may
//! appear in any log line, response body, response header or committed snapshot.

use crate::helpers::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::sync::{Arc, Mutex};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const API_KEY: &str = "canary-partner-key-58d2";
const PATIENT: &str = "canary-patient-31f7";
const SIGNATURE: &str = "canary-presigned-signature-a0b1";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn canaries() -> Vec<&'static str> {
    vec![UPSTREAM_TOKEN, API_KEY, PATIENT, SIGNATURE]
}

#[tokio::test]
async fn no_canary_secret_or_patient_id_reaches_a_log_line_a_response_or_a_snapshot() {
    let logs = Captured::default();
    let writer = logs.clone();
    let _ = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .try_init();

    let key_hash = hex::encode(Sha256::digest(API_KEY.as_bytes()));
    let app = TestApp::spawn_with(&format!(
        "{}\n[[sources]]\nid = \"7ce6f387-c33c-417d-8682-81e83628cbd9\"\nname = \"Canary source\"\napi_key_sha256 = \"{key_hash}\"\ndestinations = [\"spec-ehr\"]\n",
        admin_toml()
    ))
    .await;
    let file_host = MockServer::start().await;
    let host = format!("http://localhost:{}", file_host.address().port());
    Mock::given(method("POST"))
        .and(path_regex(r"\$export$"))
        .respond_with(ResponseTemplate::new(202).insert_header(
            "Content-Location",
            format!("{}{UPSTREAM_STATUS}", app.upstream.uri()),
        ))
        .mount(&app.upstream)
        .await;
    Mock::given(path(UPSTREAM_STATUS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "transactionTime": "2025-01-01T00:00:00Z",
            "request": format!("{}/fhir/r4/Group/example-group-id/$export", app.upstream.uri()),
            "requiresAccessToken": true,
            "output": [{"type": "Patient", "url": format!("{}/files/p.ndjson", app.upstream.uri())}],
            "error": []
        })))
        .mount(&app.upstream)
        .await;
    Mock::given(path("/files/p.ndjson"))
        .respond_with(ResponseTemplate::new(307).insert_header(
            "Location",
            format!("{host}/bucket/p.ndjson?X-Amz-Signature={SIGNATURE}"),
        ))
        .mount(&app.upstream)
        .await;
    Mock::given(path("/bucket/p.ndjson"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string("{\"resourceType\":\"Patient\"}\n"),
        )
        .mount(&file_host)
        .await;

    let mut seen: Vec<String> = Vec::new();
    let record = |r: reqwest::Response| async move {
        let headers = format!("{:?}", r.headers());
        let status = r.status();
        (
            status,
            format!("{headers}\n{}", r.text().await.unwrap_or_default()),
        )
    };
    let mut envelope = seed();
    envelope["patient"] = json!([format!("Patient/{PATIENT}")]);
    let kick = app
        .post_envelope_as(API_KEY, &spec_group_route(), &envelope)
        .await;
    let location = kick.headers()["Content-Location"]
        .to_str()
        .unwrap()
        .to_owned();
    let (status, text) = record(kick).await;
    assert_eq!(status, 202, "{text}");
    seen.push(text);
    let (_, text) = record(app.get_as(API_KEY, local(&app, &location)).await).await;
    seen.push(text);
    let file = local(&app, &location).replace("export-status", "export-file") + "/0";
    let (status, text) = record(app.get_as(API_KEY, file).await).await;
    assert_eq!(status, 200, "{text}");
    seen.push(text);
    let mut bad = seed();
    bad["patient"] = json!([format!("Patient/{PATIENT} x")]);
    let (status, text) = record(
        app.post_envelope_as(API_KEY, &spec_group_route(), &bad)
            .await,
    )
    .await;
    assert_eq!(status, 400);
    seen.push(text);
    let (_, text) = record(
        app.post_envelope_as(&format!("{API_KEY}x"), &spec_group_route(), &seed())
            .await,
    )
    .await;
    seen.push(text);

    // The message log and the admin API hold metadata only.
    for route in [
        "/admin/logs?kind=all&limit=500".to_owned(),
        format!("/admin/logs/{SEED_LOG_ID}"),
        "/admin/jobs".to_owned(),
    ] {
        let (status, body) = admin_get(&app, &route).await;
        assert_eq!(status, 200, "{route}");
        seen.push(body.to_string());
    }
    let (_, all) = admin_get(&app, "/admin/logs?kind=all&limit=500").await;
    assert!(
        all["entries"].as_array().unwrap().len() >= 8,
        "requests and upstream calls were logged: {all}"
    );

    let captured = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    // Every line of a request carries the request's span: its Log ID, and once known its job,
    // source, destination and environment.
    let accepted: Value = captured
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "Kick-off accepted.")
        .expect("the kick-off was logged");
    assert_eq!(accepted["span"]["log_id"], SEED_LOG_ID, "{accepted}");
    for field in [
        "attempt_id",
        "job_id",
        "source",
        "destination",
        "environment",
    ] {
        assert!(accepted["span"][field].is_string(), "{field}: {accepted}");
    }
    let closing: Value = captured
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["fields"]["message"] == "Request handled." && l["span"]["log_id"] == SEED_LOG_ID
        })
        .expect("the request's closing line");
    assert!(closing["fields"]["latency_ms"].is_number(), "{closing}");
    assert!(captured.lines().count() > 5, "debug logs were captured");
    for line in captured.lines() {
        let _: Value = serde_json::from_str(line).expect("every log line is JSON");
    }
    for canary in canaries() {
        assert!(!captured.contains(canary), "{canary} appears in the logs");
        for body in &seen {
            assert!(
                !body.contains(canary),
                "{canary} appears in a response: {body}"
            );
        }
    }
    let snapshots = repo().join("tests/api/snapshots");
    for entry in std::fs::read_dir(snapshots).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for canary in canaries().into_iter().chain(["X-Amz-Signature="]) {
            assert!(!text.contains(canary), "{canary} appears in a snapshot");
        }
        assert!(
            !text.contains("\"Patient/1") && !text.contains("\"Patient/abc"),
            "a patient reference in a snapshot"
        );
    }
}
