//! After the kick-off, the gateway's contentLocation works like a Bulk Data server's status URL.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

#[tokio::test]
async fn an_export_in_progress_answers_202_with_x_progress_and_retry_after() {
    let app = TestApp::spawn().await;
    Mock::given(method("GET"))
        .and(path(UPSTREAM_STATUS))
        .and(header("Accept", "application/json"))
        .and(header(
            "Authorization",
            format!("Bearer {UPSTREAM_TOKEN}").as_str(),
        ))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("X-Progress", "50% complete")
                .insert_header("Retry-After", "120"),
        )
        .expect(1)
        .mount(&app.upstream)
        .await;
    let location = kicked_off(&app).await;

    let first = app.get(local(&app, &location)).await;
    let second = app.get(local(&app, &location)).await;

    assert_eq!(first.status(), 202);
    assert_eq!(first.headers()["X-Progress"], "50% complete");
    assert_eq!(first.headers()["Retry-After"], "120");
    assert_eq!(
        second.status(),
        202,
        "answered from the store, no second upstream call"
    );
    assert_eq!(second.headers()["X-Progress"], "50% complete");
    let wait: u64 = second.headers()["Retry-After"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((118..=120).contains(&wait), "the remaining wait: {wait}");
}

#[tokio::test]
async fn a_long_x_progress_is_cut_to_100_characters_and_an_http_date_retry_after_becomes_seconds() {
    let app = TestApp::spawn().await;
    let later = chrono::Utc::now() + chrono::Duration::seconds(90);
    upstream_status(
        &app,
        ResponseTemplate::new(202)
            .insert_header("X-Progress", "p".repeat(300))
            .insert_header(
                "Retry-After",
                later.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
            ),
    )
    .await;
    let location = kicked_off(&app).await;

    let response = app.get(local(&app, &location)).await;

    assert_eq!(response.headers()["X-Progress"].len(), 100);
    let wait: u64 = response.headers()["Retry-After"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((85..=90).contains(&wait), "{wait}");
}

#[tokio::test]
async fn a_completed_export_answers_with_a_manifest_of_gateway_urls_only_and_never_asks_upstream_again()
 {
    let app = TestApp::spawn().await;
    Mock::given(method("GET"))
        .and(path(UPSTREAM_STATUS))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Expires", "Mon, 22 Jul 2030 23:59:59 GMT")
                .set_body_json(manifest(
                    &app.upstream.uri(),
                    Some("https://bucket.s3.example"),
                )),
        )
        .expect(1)
        .mount(&app.upstream)
        .await;
    let location = kicked_off(&app).await;

    let first = app.get(local(&app, &location)).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["Expires"], "Mon, 22 Jul 2030 23:59:59 GMT");
    let body = first.text().await.unwrap();
    let again = app.get(local(&app, &location)).await.text().await.unwrap();

    assert_eq!(body, again);
    assert!(
        !body.contains(&app.upstream.uri())
            && !body.contains("s3.example")
            && !body.contains("X-Amz")
    );
    let manifest: Value = serde_json::from_str(&body).unwrap();
    // This gateway has no partner credentials configured: its file URLs need no token.
    assert_eq!(manifest["requiresAccessToken"], false);
    let job = location.rsplit('/').next().unwrap();
    let redacted: Value = serde_json::from_str(&body.replace(job, "[job-id]")).unwrap();
    insta::assert_json_snapshot!("rewritten_manifest", redacted);
}

#[tokio::test]
async fn a_manifest_that_breaks_the_ig_is_a_502() {
    let app = TestApp::spawn().await;
    upstream_status(
        &app,
        ResponseTemplate::new(200).set_body_json(json!({"transactionTime": "x", "output": "nope"})),
    )
    .await;
    let location = kicked_off(&app).await;

    let response = app.get(local(&app, &location)).await;

    assert_eq!(response.status(), 502);
    assert_eq!(codes(&json_body(response).await), ["exception"]);
}

#[tokio::test]
async fn upstream_status_failures_answer_like_kickoff_failures() {
    let app = TestApp::spawn().await;
    upstream_status(&app, ResponseTemplate::new(503)).await;
    let location = kicked_off(&app).await;

    let response = app.get(local(&app, &location)).await;

    assert_eq!(response.status(), 502);
    assert_eq!(codes(&json_body(response).await), ["transient"]);
}

#[tokio::test]
async fn an_upstream_status_timeout_is_a_504() {
    let app = TestApp::spawn().await;
    upstream_status(
        &app,
        ResponseTemplate::new(202).set_delay(Duration::from_secs(5)),
    )
    .await;
    let location = kicked_off(&app).await;

    let response = app.get(local(&app, &location)).await;

    assert_eq!(response.status(), 504);
}

#[tokio::test]
async fn an_upstream_404_marks_the_job_expired_and_later_polls_do_not_reach_the_ehr() {
    let app = TestApp::spawn().await;
    Mock::given(method("GET"))
        .and(path(UPSTREAM_STATUS))
        .respond_with(ResponseTemplate::new(404))
        .expect(1)
        .mount(&app.upstream)
        .await;
    let location = kicked_off(&app).await;

    let first = app.get(local(&app, &location)).await;
    let second = app.get(local(&app, &location)).await;

    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (404, 404)
    );
    let job_id = uuid::Uuid::parse_str(location.rsplit('/').next().unwrap()).unwrap();
    let job = app.state().store.get(job_id).await.unwrap().unwrap();
    assert_eq!(job.state, fhirgate::store::JobState::Expired);
}

#[tokio::test]
async fn unknown_jobs_and_jobs_of_another_destination_are_404_without_an_upstream_call() {
    let app = TestApp::spawn().await;
    Mock::given(method("GET"))
        .and(path(UPSTREAM_STATUS))
        .respond_with(ResponseTemplate::new(202))
        .expect(0)
        .mount(&app.upstream)
        .await;
    let location = kicked_off(&app).await;
    let job = location.rsplit('/').next().unwrap();

    for path in [
        format!(
            "/fhir/R4/spec-ehr/Development/export-status/{}",
            uuid::Uuid::new_v4()
        ),
        "/fhir/R4/spec-ehr/Development/export-status/not-a-uuid".to_owned(),
        format!("/fhir/R4/strict-ehr/Development/export-status/{job}"),
        format!("/fhir/R4/oracle/Production/export-status/{job}"),
        format!("/fhir/R4/spec-ehr/Development/export-file/{job}/0"),
    ] {
        let response = app.get(app.url(&path)).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(codes(&json_body(response).await), ["not-found"]);
    }
}

#[tokio::test]
async fn delete_reaches_the_upstream_and_then_status_and_files_answer_404() {
    let app = TestApp::spawn().await;
    let location = completed(&app, manifest(&app.upstream.uri(), None)).await;
    Mock::given(method("DELETE"))
        .and(path(UPSTREAM_STATUS))
        .and(header(
            "Authorization",
            format!("Bearer {UPSTREAM_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&app.upstream)
        .await;

    let deleted = app
        .client
        .delete(local(&app, &location))
        .send()
        .await
        .unwrap();
    let status = app.get(local(&app, &location)).await;
    let file = app
        .get(local(&app, &location).replace("export-status", "export-file") + "/0")
        .await;
    let again = app
        .client
        .delete(local(&app, &location))
        .send()
        .await
        .unwrap();

    assert_eq!(deleted.status(), 202);
    assert_eq!(status.status(), 404);
    assert_eq!(file.status(), 404);
    assert_eq!(again.status(), 404);
}

#[tokio::test]
async fn a_failed_upstream_delete_leaves_the_job_in_place() {
    let app = TestApp::spawn().await;
    let location = completed(&app, manifest(&app.upstream.uri(), None)).await;
    Mock::given(method("DELETE"))
        .and(path(UPSTREAM_STATUS))
        .respond_with(ResponseTemplate::new(500))
        .mount(&app.upstream)
        .await;

    let deleted = app
        .client
        .delete(local(&app, &location))
        .send()
        .await
        .unwrap();
    let status = app.get(local(&app, &location)).await;

    assert_eq!(deleted.status(), 502);
    assert_eq!(status.status(), 200);
}

#[tokio::test]
async fn a_job_kicked_off_through_one_replica_is_polled_downloaded_and_deleted_through_another() {
    let first = TestApp::spawn().await;
    let second = first.replica().await;
    Mock::given(method("GET"))
        .and(path("/files/patient.ndjson"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string("{\"resourceType\":\"Patient\"}\n"),
        )
        .mount(&first.upstream)
        .await;
    Mock::given(method("DELETE"))
        .and(path(UPSTREAM_STATUS))
        .respond_with(ResponseTemplate::new(202))
        .mount(&first.upstream)
        .await;
    upstream_completes(&first).await;
    let location = kicked_off(&first).await;

    let status = second.get(local(&second, &location)).await;
    let file = second
        .get(local(&second, &location).replace("export-status", "export-file") + "/0")
        .await;
    let file_status = file.status();
    let body = file.text().await.unwrap();
    let deleted = second
        .client
        .delete(local(&second, &location))
        .send()
        .await
        .unwrap();
    let after = first.get(local(&first, &location)).await;

    assert_eq!(status.status(), 200);
    assert_eq!(file_status, 200);
    assert_eq!(body, "{\"resourceType\":\"Patient\"}\n");
    assert_eq!(deleted.status(), 202);
    assert_eq!(after.status(), 404, "the first replica sees the delete");
}

#[tokio::test]
async fn a_completed_exports_manifest_is_answered_the_same_to_every_poll_until_the_job_changes() {
    let app = TestApp::spawn().await;
    let location = completed(&app, manifest(&app.upstream.uri(), None)).await;
    let first = app.get(local(&app, &location)).await.text().await.unwrap();
    let second = app.get(local(&app, &location)).await.text().await.unwrap();
    assert_eq!(first, second);
    // The job changes in the store (as another replica's poll would record): the next answer is
    // what the store now holds, not the page rendered before.
    let job = stored_job(&app, &location).await;
    let mut changed = manifest(&app.upstream.uri(), None);
    changed["output"] = json!([
        {"type": "Condition", "url": format!("{}/files/c.ndjson", app.upstream.uri()), "count": 3}
    ]);
    app.state()
        .store
        .record_status(
            job.id,
            &fhirgate::store::StatusUpdate::Completed {
                manifest: changed.to_string(),
                expires: None,
                notify: false,
            },
            chrono::Utc::now() + chrono::Duration::seconds(1),
        )
        .await
        .unwrap();
    let after: Value = app.get(local(&app, &location)).await.json().await.unwrap();
    let types: Vec<&str> = after["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Condition"]);
    // Deleted: 404 from then on, whatever was rendered.
    app.state()
        .store
        .record_status(
            job.id,
            &fhirgate::store::StatusUpdate::Deleted,
            chrono::Utc::now() + chrono::Duration::seconds(2),
        )
        .await
        .unwrap();
    assert_eq!(app.get(local(&app, &location)).await.status(), 404);
}

#[tokio::test]
async fn a_finished_job_is_kept_for_its_retention_then_its_status_url_answers_404_and_the_envelope_starts_a_new_job()
 {
    let app = TestApp::spawn().await;
    let location = completed(&app, manifest(&app.upstream.uri(), None)).await;
    let store = app.state().store.as_ref();

    let days = app.settings.jobs.retention_days;
    assert_eq!(days, 30, "[jobs] retention_days defaults to 30");
    let metrics = &app.state().metrics;
    let pruned = fhirgate::service::retention::prune_jobs_now(store, days, metrics).await;
    assert_eq!(pruned, 0, "a job finished just now is within its retention");
    assert_eq!(app.get(local(&app, &location)).await.status(), 200);
    let same = app.post_envelope(&spec_group_route(), &seed()).await;
    assert_eq!(
        same.headers()["Content-Location"],
        location.as_str(),
        "a retry"
    );

    // What the pruner does once the retention has passed since the job's last change.
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(store.prune_jobs(later, 1_000).await.unwrap(), 1);

    let status = app.get(local(&app, &location)).await;
    assert_eq!(status.status(), 404);
    assert_eq!(codes(&json_body(status).await), ["not-found"]);
    let again = app.post_envelope(&spec_group_route(), &seed()).await;
    assert_eq!(again.status(), 202);
    let new_location = again.headers()["Content-Location"].to_str().unwrap();
    assert_ne!(new_location, location, "the same envelope is a new job");
    assert_eq!(
        app.upstream_kickoffs().await.len(),
        2,
        "sent to the EHR again"
    );
}
