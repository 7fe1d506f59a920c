//! What the partner hears when the EHR says no, fails, is slow, or answers nonsense.

use crate::helpers::*;
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::path_regex;
use wiremock::{Mock, ResponseTemplate};

async fn upstream_answers(app: &TestApp, template: ResponseTemplate) {
    Mock::given(path_regex(r"\$export$"))
        .respond_with(template)
        .mount(&app.upstream)
        .await;
}

#[tokio::test]
async fn an_upstream_400_operation_outcome_is_passed_on_with_its_status_and_issues_prefixed() {
    let app = TestApp::spawn().await;
    upstream_answers(
        &app,
        ResponseTemplate::new(400).set_body_json(json!({
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "processing", "diagnostics": "Unsupported resource type in _type parameter"}]
        })),
    )
    .await;

    let response = app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(response.status(), 400);
    let outcome = json_body(response).await;
    assert_eq!(codes(&outcome), ["processing"]);
    insta::assert_json_snapshot!("upstream_400_passed_on", outcome);
}

#[tokio::test]
async fn an_upstream_404_for_an_unknown_group_is_a_404() {
    let app = TestApp::spawn().await;
    upstream_answers(
        &app,
        ResponseTemplate::new(404).set_body_json(json!({
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "not-found", "diagnostics": "Group resource not found or not accessible"}]
        })),
    )
    .await;

    let response = app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(response.status(), 404);
    assert_eq!(codes(&json_body(response).await), ["not-found"]);
}

#[tokio::test]
async fn an_upstream_429_is_a_429_with_its_retry_after_passed_on() {
    let app = TestApp::spawn().await;
    upstream_answers(
        &app,
        ResponseTemplate::new(429).insert_header("Retry-After", "600"),
    )
    .await;

    let response = app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["Retry-After"], "600");
    let outcome = json_body(response).await;
    assert_eq!(codes(&outcome)[0], "throttled");
    insta::assert_json_snapshot!("upstream_429", outcome);
}

#[tokio::test]
async fn an_upstream_429_with_an_http_date_retry_after_is_converted_to_seconds() {
    let app = TestApp::spawn().await;
    let later = chrono::Utc::now() + chrono::Duration::seconds(120);
    upstream_answers(
        &app,
        ResponseTemplate::new(429).insert_header(
            "Retry-After",
            later.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        ),
    )
    .await;

    let response = app.post_envelope(&spec_group_route(), &seed()).await;

    let secs: u64 = response.headers()["Retry-After"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((100..=120).contains(&secs), "{secs}");
}

#[tokio::test]
async fn an_upstream_5xx_is_a_502_transient() {
    let app = TestApp::spawn().await;
    upstream_answers(
        &app,
        ResponseTemplate::new(503).set_body_string("<html>down</html>"),
    )
    .await;

    let response = app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(response.status(), 502);
    let outcome = json_body(response).await;
    assert_eq!(codes(&outcome), ["transient"]);
    insta::assert_json_snapshot!("upstream_503", outcome);
}

#[tokio::test]
async fn an_upstream_that_does_not_answer_in_time_is_a_504_timeout() {
    let app = TestApp::spawn().await;
    upstream_answers(
        &app,
        ResponseTemplate::new(202).set_delay(Duration::from_secs(5)),
    )
    .await;

    let response = app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(response.status(), 504);
    assert_eq!(codes(&json_body(response).await), ["timeout"]);
}

#[tokio::test]
async fn an_upstream_that_refuses_connections_is_a_502_transient() {
    let app = TestApp::spawn().await;

    let response = app
        .post_envelope(
            &group_route("nowhere", "Development", "example-group-id"),
            &seed(),
        )
        .await;

    assert_eq!(response.status(), 502);
    assert_eq!(codes(&json_body(response).await), ["transient"]);
}

#[tokio::test]
async fn an_upstream_202_without_content_location_is_a_502_exception() {
    let app = TestApp::spawn().await;
    upstream_answers(&app, ResponseTemplate::new(202)).await;

    let response = app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(response.status(), 502);
    let outcome = json_body(response).await;
    assert_eq!(codes(&outcome), ["exception"]);
    insta::assert_json_snapshot!("upstream_202_without_content_location", outcome);
}

#[tokio::test]
async fn an_upstream_4xx_whose_body_is_not_json_is_a_502_exception() {
    let app = TestApp::spawn().await;
    upstream_answers(
        &app,
        ResponseTemplate::new(400).set_body_string("<html>Bad Request</html>"),
    )
    .await;

    let response = app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(response.status(), 502);
    assert_eq!(codes(&json_body(response).await), ["exception"]);
}

#[tokio::test]
async fn a_content_location_that_is_not_an_absolute_url_on_the_ehrs_origin_is_a_502_exception() {
    for location in [
        "bulk-export/jobs/9".to_owned(),
        "ht!tp://::nope".to_owned(),
        "ftp://ehr.example/jobs/9".to_owned(),
        "https://elsewhere.example/jobs/9".to_owned(),
    ] {
        let app = TestApp::spawn().await;
        upstream_answers(
            &app,
            ResponseTemplate::new(202).insert_header("Content-Location", location.as_str()),
        )
        .await;

        let response = app.post_envelope(&spec_group_route(), &seed()).await;

        assert_eq!(response.status(), 502, "{location}");
        let outcome = json_body(response).await;
        assert_eq!(codes(&outcome), ["exception"], "{location}");
        let text = outcome.to_string();
        assert!(
            !text.contains("elsewhere.example") && !text.contains("nope"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_job_store_that_is_unreachable_is_a_503_and_the_upstream_is_not_called() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 0).await;
    app.state().store.close().await;

    let response = app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(response.status(), 503);
    assert_eq!(codes(&json_body(response).await), ["transient"]);
    let ready = app.get(app.url("/readyz")).await;
    assert_eq!(ready.status(), 503);
}
