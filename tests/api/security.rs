//! Who may call, what each source may reach, and that nothing secret leaks. Every refusal is checked
//! together with the EHR never being called.

use crate::helpers::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

const KEY_A: &str = "canary-api-key-a-7d41";
const KEY_B: &str = "canary-api-key-b-0c9e";
const KEY_LIMITED: &str = "canary-api-key-limited";
const SOURCE_A: &str = "7ce6f387-c33c-417d-8682-81e83628cbd9";

fn sources() -> String {
    let h = |k: &str| hex::encode(Sha256::digest(k.as_bytes()));
    format!(
        r#"
[[destinations]]
slug = "capped"
name = "An EHR that takes one kick-off at a time"
vendor = "bulk-data"
max_concurrent_kickoffs = 1
[destinations.environments.Development]
base_url = "@UPSTREAM@/capped"
allow_private_addresses = true

[[sources]]
id = "{SOURCE_A}"
name = "Source A"
api_key_sha256 = "{}"
destinations = ["spec-ehr", "capped"]

[[sources]]
id = "11111111-2222-4333-8444-555555555555"
name = "Source B"
api_key_sha256 = "{}"
destinations = ["spec-ehr:Development", "oracle:Production"]

[[sources]]
id = "99999999-2222-4333-8444-555555555555"
name = "Limited source"
api_key_sha256 = "{}"
destinations = ["spec-ehr"]
rate_limit_per_minute = 2
"#,
        h(KEY_A),
        h(KEY_B),
        h(KEY_LIMITED)
    )
}

async fn secured() -> TestApp {
    TestApp::spawn_with(&sources()).await
}

async fn post_as(app: &TestApp, key: Option<&str>, route: &str, body: &Value) -> reqwest::Response {
    let mut req = app.client.post(app.url(route)).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_request_without_credentials_is_401_and_the_ehr_is_not_called() {
    let app = secured().await;
    expect_kickoffs(&app, 0).await;

    let response = post_as(&app, None, &spec_group_route(), &seed()).await;

    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["WWW-Authenticate"], "Bearer");
    let outcome = json_body(response).await;
    assert_eq!(codes(&outcome), ["security"]);
    insta::assert_json_snapshot!("no_credentials", outcome);
}

#[tokio::test]
async fn a_wrong_api_key_is_401_without_echoing_it() {
    let app = secured().await;
    expect_kickoffs(&app, 0).await;

    let response = post_as(&app, Some("canary-wrong-key"), &spec_group_route(), &seed()).await;

    assert_eq!(response.status(), 401);
    assert!(!response.text().await.unwrap().contains("canary-wrong-key"));
}

#[tokio::test]
async fn health_readiness_and_metadata_need_no_credentials() {
    let app = secured().await;

    assert_eq!(app.get(app.url("/healthz")).await.status(), 200);
    assert_eq!(app.get(app.url("/readyz")).await.status(), 200);
    let metadata = app
        .get(app.url("/fhir/R4/spec-ehr/Development/metadata"))
        .await;
    assert_eq!(metadata.status(), 200);
}

#[tokio::test]
async fn a_source_reaches_only_the_destinations_and_environments_granted_to_it() {
    let app = secured().await;
    expect_kickoffs(&app, 0).await;

    let oracle = post_as(
        &app,
        Some(KEY_A),
        &group_route("oracle", "Production", "example-group-id"),
        &seed(),
    )
    .await;
    let netsmart = post_as(
        &app,
        Some(KEY_B),
        &group_route("netsmart", "Staging", "example-group-id"),
        &seed(),
    )
    .await;

    assert_eq!(oracle.status(), 403);
    assert_eq!(codes(&json_body(oracle).await), ["forbidden"]);
    assert_eq!(netsmart.status(), 403);
}

#[tokio::test]
async fn meta_source_id_must_be_the_authenticated_source() {
    let app = secured().await;
    expect_kickoffs(&app, 0).await;

    let response = post_as(&app, Some(KEY_B), &spec_group_route(), &seed()).await;

    assert_eq!(response.status(), 403);
    assert_eq!(expressions(&json_body(response).await), ["Meta.Source.ID"]);
}

#[tokio::test]
async fn another_sources_job_is_404_for_status_files_and_delete_and_the_ehr_is_not_called() {
    let app = secured().await;
    app.upstream_accepts_kickoffs().await;
    let kick = post_as(&app, Some(KEY_A), &spec_group_route(), &seed()).await;
    assert_eq!(kick.status(), 202);
    let location = kick.headers()["Content-Location"]
        .to_str()
        .unwrap()
        .to_owned();
    Mock::given(path(UPSTREAM_STATUS))
        .respond_with(ResponseTemplate::new(202))
        .expect(0)
        .mount(&app.upstream)
        .await;

    let status = app.get_as(KEY_B, local(&app, &location)).await;
    let file = app
        .get_as(
            KEY_B,
            local(&app, &location).replace("export-status", "export-file") + "/0",
        )
        .await;
    let delete = app
        .client
        .delete(local(&app, &location))
        .bearer_auth(KEY_B)
        .send()
        .await
        .unwrap();

    assert_eq!(
        (
            status.status().as_u16(),
            file.status().as_u16(),
            delete.status().as_u16()
        ),
        (404, 404, 404)
    );
}

#[tokio::test]
async fn the_owner_polls_its_job_as_usual() {
    let app = secured().await;
    app.upstream_accepts_kickoffs().await;
    upstream_completes(&app).await;
    let kick = post_as(&app, Some(KEY_A), &spec_group_route(), &seed()).await;
    let location = kick.headers()["Content-Location"]
        .to_str()
        .unwrap()
        .to_owned();

    assert_eq!(
        app.get_as(KEY_A, local(&app, &location)).await.status(),
        200
    );
}

#[tokio::test]
async fn a_source_over_its_rate_limit_gets_429_with_retry_after() {
    let app = secured().await;
    app.upstream_accepts_kickoffs().await;
    // Any authenticated route spends the budget: here the status of a job that does not exist.
    let status = app.url(&format!(
        "/fhir/R4/spec-ehr/Development/export-status/{}",
        uuid::Uuid::new_v4()
    ));

    let first = app.get_as(KEY_LIMITED, status.clone()).await;
    let second = app.get_as(KEY_LIMITED, status.clone()).await;
    let third = app.get_as(KEY_LIMITED, status.clone()).await;
    let other_source = app.get_as(KEY_A, status).await;

    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (404, 404)
    );
    assert_eq!(third.status(), 429);
    let wait: u64 = third.headers()["Retry-After"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    assert_eq!(other_source.status(), 404, "limits are per source");
}

#[tokio::test]
async fn a_destination_at_its_cap_of_concurrent_kickoffs_answers_429() {
    let app = secured().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/capped/.*\$export$"))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header(
                    "Content-Location",
                    format!("{}/capped/jobs/1", app.upstream.uri()),
                )
                .set_delay(Duration::from_millis(800)),
        )
        .expect(1)
        .mount(&app.upstream)
        .await;
    let route = group_route("capped", "Development", "example-group-id");
    let mut other = seed();
    other["_type"] = Value::String("Patient".into());

    let first = seed();
    let (a, b) = tokio::join!(post_as(&app, Some(KEY_A), &route, &first), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        post_as(&app, Some(KEY_A), &route, &other).await
    });

    assert_eq!((a.status().as_u16(), b.status().as_u16()), (202, 429));
}

#[tokio::test]
async fn a_client_that_sends_its_body_too_slowly_is_cut_off_with_408() {
    let app = TestApp::spawn_configured("", |s| s.server.body_timeout_secs = 0.3).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"Meta\":",
        spec_group_route()
    );
    socket.write_all(head.as_bytes()).await.unwrap();

    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer))
        .await
        .unwrap()
        .unwrap();

    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
}
