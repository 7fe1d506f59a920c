//! The background poller: due jobs only, Retry-After honoured, completion recorded, sources notified,
//! claims that expire when a poller dies. Time is a manual clock.

use crate::helpers::*;
use fhirgate::service::poller::{ManualClock, Poller};
use fhirgate::store::JobState;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const NOTIFIED_SOURCE: &str = r#"
[[sources]]
id = "7ce6f387-c33c-417d-8682-81e83628cbd9"
name = "Redox Dev Tools"
notify_url = "{upstream}/notify"

[worker]
notify_max_attempts = 2
"#;

async fn spawn_notified() -> TestApp {
    // The notify URL lives on the same mock server; the config is written before its port is known,
    // so it is patched in through a replica-style restart of the settings.
    let app = TestApp::spawn().await;
    let text = NOTIFIED_SOURCE.replace("{upstream}", &app.upstream.uri());
    let mut settings = app.settings.clone();
    let extra: fhirgate::config::Settings = fhirgate::config::Settings::from_toml(&text).unwrap();
    settings.sources = extra.sources;
    settings.worker = extra.worker;
    app.with_settings(settings).await
}

fn job_id(location: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(location.rsplit('/').next().unwrap()).unwrap()
}

async fn status_polls(app: &TestApp) -> usize {
    app.upstream_requests()
        .await
        .iter()
        .filter(|r| r.url.path() == UPSTREAM_STATUS)
        .count()
}

#[tokio::test]
async fn the_poller_waits_for_retry_after_and_then_records_completion() {
    let app = TestApp::spawn().await;
    Mock::given(method("GET"))
        .and(path(UPSTREAM_STATUS))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("Retry-After", "30")
                .insert_header("X-Progress", "10%"),
        )
        .up_to_n_times(1)
        .mount(&app.upstream)
        .await;
    app.upstream_get(
        UPSTREAM_STATUS,
        ResponseTemplate::new(200).set_body_json(manifest(&app.upstream.uri(), None)),
    )
    .await;
    let location = kicked_off(&app).await;
    let clock = Arc::new(ManualClock::new(
        chrono::Utc::now() + chrono::Duration::seconds(1),
    ));
    let poller = Poller::new(app.state().clone(), clock.clone());

    assert_eq!(poller.tick().await.unwrap(), 1);
    assert_eq!(status_polls(&app).await, 1);
    let job = stored_job(&app, &location).await;
    assert_eq!(job.progress.as_deref(), Some("10%"));

    clock.advance(Duration::from_secs(29));
    assert_eq!(
        poller.tick().await.unwrap(),
        0,
        "not due before Retry-After"
    );
    assert_eq!(status_polls(&app).await, 1);

    clock.advance(Duration::from_secs(2));
    assert_eq!(poller.tick().await.unwrap(), 1);
    let job = stored_job(&app, &location).await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(
        poller.tick().await.unwrap(),
        0,
        "completed jobs are not polled"
    );
    let served = app.get(local(&app, &location)).await;
    assert_eq!(served.status(), 200);
    assert_eq!(
        status_polls(&app).await,
        2,
        "the partner's status came from the store"
    );
}

#[tokio::test]
async fn a_source_with_a_notify_url_hears_when_its_job_completes() {
    let app = spawn_notified().await;
    upstream_completes(&app).await;
    Mock::given(method("POST"))
        .and(path("/notify"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&app.upstream)
        .await;
    let location = kicked_off(&app).await;
    let clock = Arc::new(ManualClock::new(
        chrono::Utc::now() + chrono::Duration::seconds(1),
    ));

    Poller::new(app.state().clone(), clock)
        .tick()
        .await
        .unwrap();

    let sent: Vec<wiremock::Request> = app
        .upstream_requests()
        .await
        .into_iter()
        .filter(|r| r.url.path() == "/notify")
        .collect();
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(body["Meta"]["EventType"], "status-check-response");
    assert_eq!(body["status"], 200);
    assert_eq!(body["contentLocation"], location.as_str());
    let text = body.to_string();
    assert!(
        !text.contains(&format!("{}/files", app.upstream.uri())),
        "only gateway URLs"
    );
    let job = stored_job(&app, &location).await;
    assert_eq!(job.notify_state.as_deref(), Some("sent"));
    let redacted: Value =
        serde_json::from_str(&text.replace(&job.id.to_string(), "[job-id]")).unwrap();
    insta::assert_json_snapshot!(
        "status_check_response_notification",
        redact_envelope(redacted)
    );
}

#[tokio::test]
async fn a_failing_notify_url_is_retried_with_backoff_then_given_up() {
    let app = spawn_notified().await;
    upstream_completes(&app).await;
    Mock::given(method("POST"))
        .and(path("/notify"))
        .respond_with(ResponseTemplate::new(500))
        .expect(2)
        .mount(&app.upstream)
        .await;
    let location = kicked_off(&app).await;
    let clock = Arc::new(ManualClock::new(
        chrono::Utc::now() + chrono::Duration::seconds(1),
    ));
    let poller = Poller::new(app.state().clone(), clock.clone());

    poller.tick().await.unwrap();
    let after_first = stored_job(&app, &location).await;
    assert_eq!(
        poller.tick().await.unwrap(),
        0,
        "the retry waits for its backoff"
    );
    clock.advance(Duration::from_secs(10));
    poller.tick().await.unwrap();
    let after_second = stored_job(&app, &location).await;

    assert_eq!(
        (
            after_first.notify_state.as_deref(),
            after_first.notify_attempts
        ),
        (Some("pending"), 1)
    );
    assert_eq!(
        (
            after_second.notify_state.as_deref(),
            after_second.notify_attempts
        ),
        (Some("failed"), 2)
    );
}

#[tokio::test]
async fn a_crashed_pollers_claim_expires_and_another_poller_takes_the_job() {
    let app = TestApp::spawn().await;
    upstream_status(
        &app,
        ResponseTemplate::new(202).insert_header("Retry-After", "5"),
    )
    .await;
    let location = kicked_off(&app).await;
    let store = app.state().store.clone();
    let now = chrono::Utc::now() + chrono::Duration::seconds(1);
    let ttl = Duration::from_secs(60);

    let crashed = store
        .claim_due("poller-that-dies", now, ttl, 10)
        .await
        .unwrap();
    let meanwhile = store
        .claim_due("poller-b", now + chrono::Duration::seconds(30), ttl, 10)
        .await
        .unwrap();
    let later = store
        .claim_due("poller-b", now + chrono::Duration::seconds(61), ttl, 10)
        .await
        .unwrap();

    assert_eq!(crashed.len(), 1);
    assert!(meanwhile.is_empty(), "a live claim is skipped");
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].id, job_id(&location));
}

#[tokio::test]
async fn an_enabled_poller_completes_jobs_in_the_background_and_stops_on_shutdown() {
    let app = TestApp::spawn_with("\n[worker]\nenabled = true\ntick_secs = 0.05\n").await;
    upstream_completes(&app).await;
    let location = kicked_off(&app).await;

    let mut state = None;
    for _ in 0..100 {
        let job = stored_job(&app, &location).await;
        state = Some(job.state);
        if job.state == JobState::Completed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(
        state,
        Some(JobState::Completed),
        "no partner asked; the poller did"
    );
}

#[tokio::test]
async fn two_concurrent_pollers_poll_each_job_once_and_notify_each_source_once() {
    let app = spawn_notified().await;
    let replica = app.replica().await;
    app.upstream_accepts_kickoffs().await;
    Mock::given(method("GET"))
        .and(path(UPSTREAM_STATUS))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(manifest(&app.upstream.uri(), None))
                .set_delay(Duration::from_millis(100)),
        )
        .mount(&app.upstream)
        .await;
    const JOBS: usize = 12;
    Mock::given(method("POST"))
        .and(path("/notify"))
        .respond_with(ResponseTemplate::new(204))
        .expect(JOBS as u64)
        .mount(&app.upstream)
        .await;
    let mut locations = Vec::new();
    for _ in 0..JOBS {
        let mut envelope = seed();
        envelope["Meta"]["Logs"][0]["ID"] = Value::String(uuid::Uuid::new_v4().to_string());
        let r = app.post_envelope(&spec_group_route(), &envelope).await;
        assert_eq!(r.status(), 202);
        locations.push(r.headers()["Content-Location"].to_str().unwrap().to_owned());
    }
    let clock = Arc::new(ManualClock::new(
        chrono::Utc::now() + chrono::Duration::seconds(1),
    ));
    let one = Poller::new(app.state().clone(), clock.clone());
    let other = Poller::new(replica.state().clone(), clock);

    let (a, b) = tokio::join!(one.tick(), other.tick());
    let (again_a, again_b) = tokio::join!(one.tick(), other.tick());

    assert_eq!(
        a.unwrap() + b.unwrap(),
        JOBS,
        "every job claimed by exactly one poller"
    );
    assert_eq!(again_a.unwrap() + again_b.unwrap(), 0, "nothing left to do");
    assert_eq!(status_polls(&app).await, JOBS, "each job polled once");
    for location in &locations {
        let job = app
            .state()
            .store
            .get(job_id(location))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(job.state, JobState::Completed);
        assert_eq!(job.notify_state.as_deref(), Some("sent"));
    }
}

#[tokio::test]
async fn the_poller_follows_every_manifest_page_and_notifies_once_with_every_file() {
    let app = spawn_notified().await;
    let up = app.upstream.uri();
    let mut first = manifest(&up, None);
    first["link"] =
        serde_json::json!([{"relation": "next", "url": format!("{up}{UPSTREAM_STATUS}?page=2")}]);
    let mut second = manifest(&up, None);
    second["output"] =
        serde_json::json!([{"type": "Condition", "url": format!("{up}/files/condition.ndjson")}]);
    Mock::given(method("GET"))
        .and(path(UPSTREAM_STATUS))
        .and(wiremock::matchers::query_param("page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(second))
        .with_priority(1)
        .mount(&app.upstream)
        .await;
    app.upstream_get(
        UPSTREAM_STATUS,
        ResponseTemplate::new(200).set_body_json(first),
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/notify"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&app.upstream)
        .await;
    let location = kicked_off(&app).await;
    let clock = Arc::new(ManualClock::new(
        chrono::Utc::now() + chrono::Duration::seconds(1),
    ));
    let poller = Poller::new(app.state().clone(), clock.clone());

    poller.tick().await.unwrap();
    clock.advance(Duration::from_secs(60));
    poller.tick().await.unwrap();

    let job = stored_job(&app, &location).await;
    assert_eq!(job.state, JobState::Completed);
    let sent: Vec<wiremock::Request> = app
        .upstream_requests()
        .await
        .into_iter()
        .filter(|r| r.url.path() == "/notify")
        .collect();
    assert_eq!(sent.len(), 1, "notified once, when the whole set is known");
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    let output = body["output"].as_array().unwrap();
    assert_eq!(
        output.len(),
        3,
        "two files from the first page, one from the second"
    );
    // Page 0 lists files 0-3 (two outputs, an error file, a deletion file): page 1's output is file 4.
    assert!(output[2]["url"].as_str().unwrap().ends_with("/4"), "{body}");
    assert!(!body.to_string().contains(&up));
}

#[tokio::test]
async fn a_poller_that_claims_a_full_batch_looks_again_at_once_instead_of_waiting_a_tick() {
    // Batch 2, a tick of an hour: five due jobs are all polled within seconds only if every full
    // batch is followed by another look at once.
    let app = TestApp::spawn().await;
    let mut settings = app.settings.clone();
    settings.worker.batch = 2;
    settings.worker.tick_secs = 3600.0;
    let app = app.with_settings(settings).await;
    app.upstream_accepts_kickoffs().await;
    upstream_completes(&app).await;
    let mut locations = Vec::new();
    for i in 0..5 {
        let mut envelope = seed();
        envelope["Meta"]["Logs"][0]["ID"] =
            Value::String(format!("00000000-0000-4000-8000-{i:012}"));
        let response = app.post_envelope(&spec_group_route(), &envelope).await;
        assert_eq!(response.status(), 202);
        locations.push(
            response.headers()["Content-Location"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let poller = Poller::new(
        app.state().clone(),
        Arc::new(fhirgate::service::poller::SystemClock),
    );
    let running = tokio::spawn(poller.run(stopped));

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut completed = 0;
        for location in &locations {
            if stored_job(&app, location).await.state == JobState::Completed {
                completed += 1;
            }
        }
        if completed == locations.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{completed} of 5 jobs completed: the poller waited for its next tick"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    running.await.unwrap();
    assert_eq!(status_polls(&app).await, 5, "each job polled once");
}
