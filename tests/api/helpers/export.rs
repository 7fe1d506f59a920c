//! A job driven through its lifecycle against the mock upstream: kick-off, status, manifest.

use super::*;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

pub const UPSTREAM_STATUS: &str = "/bulk-export/jobs/upstream-job-1";

/// Kicks off the seed envelope on spec-ehr; returns the gateway's status URL.
pub async fn kicked_off(app: &TestApp) -> String {
    if app.upstream_kickoffs().await.is_empty() {
        app.upstream_accepts_kickoffs().await;
    }
    let response = app.post_envelope(&spec_group_route(), &seed()).await;
    assert_eq!(response.status(), 202);
    response.headers()["Content-Location"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The gateway path of a status URL (the public URL is not where the test server listens).
pub fn local(app: &TestApp, public: &str) -> String {
    app.url(public.strip_prefix(PUBLIC_URL).expect("a gateway URL"))
}

/// A completion manifest whose files are on the upstream (and one on a file host).
pub fn manifest(upstream: &str, file_host: Option<&str>) -> Value {
    let mut output = vec![
        json!({"type": "Patient", "url": format!("{upstream}/files/patient.ndjson"), "count": 2}),
        json!({"type": "Observation", "url": format!("{upstream}/files/observation.ndjson"), "count": 5}),
    ];
    if let Some(host) = file_host {
        output.push(json!({"type": "Condition", "url": format!("{host}/presigned/condition.ndjson?X-Amz-Signature=abc"), "count": 1}));
    }
    json!({
        "transactionTime": "2025-07-22T23:59:59.000Z",
        "request": format!("{upstream}/fhir/r4/Group/example-group-id/$export?_type=Patient,Observation"),
        "requiresAccessToken": true,
        "output": output,
        "error": [{"type": "OperationOutcome", "url": format!("{upstream}/files/errors.ndjson")}],
        "deleted": [{"type": "Bundle", "url": format!("{upstream}/files/deleted.ndjson")}]
    })
}

/// Mounts an upstream status answer.
pub async fn upstream_status(app: &TestApp, template: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(UPSTREAM_STATUS))
        .respond_with(template)
        .mount(&app.upstream)
        .await;
}

/// Kicks off and drives the job to completion with `manifest`; returns the status URL.
pub async fn completed(app: &TestApp, manifest: Value) -> String {
    upstream_status(app, ResponseTemplate::new(200).set_body_json(manifest)).await;
    let location = kicked_off(app).await;
    let response = app.client.get(local(app, &location)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    location
}

/// The upstream's status URL answers 200 with [`manifest`]'s files on the upstream itself.
pub async fn upstream_completes(app: &TestApp) {
    upstream_status(
        app,
        ResponseTemplate::new(200).set_body_json(manifest(&app.upstream.uri(), None)),
    )
    .await;
}

/// The job behind a gateway status URL, as stored.
pub async fn stored_job(app: &TestApp, status_url: &str) -> fhirgate::store::Job {
    let id =
        uuid::Uuid::parse_str(status_url.rsplit('/').next().expect("a job id")).expect("a job id");
    app.state()
        .store
        .get(id)
        .await
        .expect("the store answers")
        .expect("the job exists")
}
