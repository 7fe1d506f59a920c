//! Redox message semantics and EHR-friendly jobs: Log IDs and AttemptIDs as the partner sent them, a
//! Log ID reused after its job ended, `Meta.Destinations`, the EHR's own request ids, kick-offs whose
//! outcome is unknown after a crash, every `Retry-After` within reason, and status answers that hold.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

fn with_log_id(log_id: &str) -> Value {
    let mut envelope = seed();
    envelope["Meta"]["Logs"][0]["ID"] = json!(log_id);
    envelope
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["Content-Location"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_refused_envelope_is_filed_under_the_partners_own_log_id() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    expect_kickoffs(&app, 0).await;
    let log_id = uuid::Uuid::new_v4().to_string();
    let mut envelope = with_log_id(&log_id);
    envelope["Meta"]["DataModel"] = json!("Clinical Summary");
    envelope["_since"] = json!("yesterday");

    let response = app.post_envelope(&spec_group_route(), &envelope).await;

    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["X-Request-ID"], log_id.as_str());
    let (status, detail) = admin_get(&app, &format!("/admin/logs/{log_id}")).await;
    assert_eq!(status, 200, "{detail}");
    let requests = detail["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 1, "{detail}");
    assert_eq!(requests[0]["gatewayStatus"], 400);
    assert_eq!(requests[0]["errorCode"], "invalid");
    assert_eq!(
        requests[0]["attemptId"],
        "925d1617-2fe0-468c-a14c-f8c04b572c54"
    );
}

#[tokio::test]
async fn an_envelope_to_an_unknown_destination_is_filed_under_its_log_id_too() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let log_id = uuid::Uuid::new_v4().to_string();

    let response = app
        .post_envelope(
            &group_route("no-such-ehr", "Development", "g"),
            &with_log_id(&log_id),
        )
        .await;

    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["X-Request-ID"], log_id.as_str());
    let (_, page) = admin_get(&app, &format!("/admin/logs?logId={log_id}")).await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 1, "{page}");
}

#[tokio::test]
async fn the_partners_attempt_id_is_echoed_and_a_retry_with_a_new_one_is_a_new_attempt() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    app.upstream_accepts_kickoffs().await;
    let retry_attempt = uuid::Uuid::new_v4().to_string();
    let mut retry = seed();
    retry["Meta"]["Logs"][0]["AttemptID"] = json!(retry_attempt);

    let first = app.post_envelope(&spec_group_route(), &seed()).await;
    let again = app.post_envelope(&spec_group_route(), &retry).await;

    assert_eq!(first.status(), 202);
    assert_eq!(again.status(), 202);
    assert_eq!(location(&first), location(&again), "the same job");
    let first = json_body(first).await;
    let again = json_body(again).await;
    assert_eq!(first["Meta"]["Logs"][0]["AttemptID"], SEED_ATTEMPT_ID);
    assert_eq!(
        again["Meta"]["Logs"][0]["AttemptID"],
        retry_attempt.as_str()
    );
    assert_eq!(app.upstream_kickoffs().await.len(), 1);
    let (_, page) = admin_get(
        &app,
        &format!("/admin/logs?logId={SEED_LOG_ID}&kind=request"),
    )
    .await;
    let mut attempts: Vec<String> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["attemptId"].as_str().unwrap().to_owned())
        .collect();
    attempts.sort();
    let mut expected = vec![SEED_ATTEMPT_ID.to_owned(), retry_attempt];
    expected.sort();
    assert_eq!(attempts, expected);
}

#[tokio::test]
async fn without_an_attempt_id_the_gateway_mints_one() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;
    let mut envelope = seed();
    envelope["Meta"]["Logs"][0]
        .as_object_mut()
        .unwrap()
        .remove("AttemptID");

    let body = json_body(app.post_envelope(&spec_group_route(), &envelope).await).await;

    let minted = body["Meta"]["Logs"][0]["AttemptID"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(minted).is_ok());
    assert_ne!(minted, SEED_ATTEMPT_ID);
}

#[tokio::test]
async fn a_log_id_whose_job_was_deleted_starts_a_new_job_when_reused() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;
    Mock::given(method("DELETE"))
        .and(path(UPSTREAM_STATUS))
        .respond_with(ResponseTemplate::new(202))
        .mount(&app.upstream)
        .await;
    upstream_status(&app, ResponseTemplate::new(202)).await;
    let first = app.post_envelope(&spec_group_route(), &seed()).await;
    let first_location = location(&first);
    let deleted = app
        .client
        .delete(local(&app, &first_location))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);

    let again = app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(again.status(), 202);
    let again_location = location(&again);
    assert_ne!(again_location, first_location, "a new contentLocation");
    assert_eq!(
        app.upstream_kickoffs().await.len(),
        2,
        "one new upstream kick-off"
    );
    let old = app.get(local(&app, &first_location)).await;
    assert_eq!(old.status(), 404, "the deleted job stays deleted");
    let new = app.get(local(&app, &again_location)).await;
    assert_eq!(new.status(), 202, "the new job is alive");
    // And the new job is idempotent in its turn.
    let third = app.post_envelope(&spec_group_route(), &seed()).await;
    assert_eq!(location(&third), again_location);
    assert_eq!(app.upstream_kickoffs().await.len(), 2);
}

#[tokio::test]
async fn a_log_id_whose_export_failed_starts_a_new_job_when_reused() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;
    upstream_status(
        &app,
        ResponseTemplate::new(400).set_body_json(json!({"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "processing", "diagnostics": "export failed"}]})),
    )
    .await;
    let first = location(&app.post_envelope(&spec_group_route(), &seed()).await);
    let failed = app.get(local(&app, &first)).await;
    assert_eq!(failed.status(), 400);

    let again = app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(again.status(), 202);
    assert_ne!(location(&again), first);
    assert_eq!(app.upstream_kickoffs().await.len(), 2);
}

#[tokio::test]
async fn an_export_the_ehr_reported_failed_answers_the_same_on_every_later_poll() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;
    Mock::given(method("GET"))
        .and(path(UPSTREAM_STATUS))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "processing", "diagnostics": "the export failed"}]})))
        .expect(1)
        .mount(&app.upstream)
        .await;
    let status_url = location(&app.post_envelope(&spec_group_route(), &seed()).await);

    let mut answers = Vec::new();
    for _ in 0..3 {
        let r = app.get(local(&app, &status_url)).await;
        answers.push((r.status().as_u16(), json_body(r).await));
    }

    assert_eq!(answers[0].0, 400);
    assert_eq!(answers[1], answers[0]);
    assert_eq!(answers[2], answers[0]);
    assert!(answers[0].1.to_string().contains("the export failed"));
}

#[tokio::test]
async fn meta_destinations_must_name_this_destination_when_it_has_an_id() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;
    let mut elsewhere = with_log_id(&uuid::Uuid::new_v4().to_string());
    elsewhere["Meta"]["Destinations"] =
        json!([{"ID": "0b0b0b0b-1111-4222-8333-444444444444", "Name": "Another EHR"}]);
    let mut among_others = with_log_id(&uuid::Uuid::new_v4().to_string());
    among_others["Meta"]["Destinations"] = json!([
        {"ID": "0b0b0b0b-1111-4222-8333-444444444444", "Name": "Another EHR"},
        {"ID": "af394f14-b34a-464f-8d24-895f370af4c9", "Name": "Redox EMR"}]);
    let mut unnamed = with_log_id(&uuid::Uuid::new_v4().to_string());
    unnamed["Meta"]["Destinations"] = json!([{"Name": "Redox EMR"}]);

    let refused = app.post_envelope(&spec_group_route(), &elsewhere).await;
    let listed = app.post_envelope(&spec_group_route(), &among_others).await;
    let by_name = app.post_envelope(&spec_group_route(), &unnamed).await;

    assert_eq!(refused.status(), 400);
    let outcome = json_body(refused).await;
    assert_eq!(codes(&outcome), ["value"]);
    assert_eq!(expressions(&outcome), ["Meta.Destinations"]);
    assert_eq!(listed.status(), 202);
    assert_eq!(by_name.status(), 202);
    assert_eq!(app.upstream_kickoffs().await.len(), 2);
}

#[tokio::test]
async fn the_ehrs_own_request_id_is_in_the_message_log() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    Mock::given(path_regex(r"\$export$"))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header(
                    "Content-Location",
                    format!("{}/r4/status/1", app.upstream.uri()),
                )
                .insert_header("opc-request-id", "opc-7f3a9c2e/41B2"),
        )
        .mount(&app.upstream)
        .await;
    let mut envelope = seed();
    envelope["_type"] = json!("Patient");
    envelope["_since"] = Value::Null;
    envelope["Meta"]["Destinations"] = json!([]);

    let kick = app
        .post_envelope(
            &group_route("oracle", "Production", "example-group-id"),
            &envelope,
        )
        .await;

    assert_eq!(kick.status(), 202, "{}", kick.text().await.unwrap());
    let (_, detail) = admin_get(&app, &format!("/admin/logs/{SEED_LOG_ID}")).await;
    assert_eq!(
        detail["attempts"][0]["upstreamRequestId"], "opc-7f3a9c2e/41B2",
        "{detail}"
    );
}

#[tokio::test]
async fn an_epoch_millisecond_retry_after_is_read_as_the_time_it_names() {
    let app = TestApp::spawn().await;
    let in_five_minutes = (chrono::Utc::now().timestamp() + 300) * 1000 + 355;
    Mock::given(path_regex(r"\$export$"))
        .respond_with(
            ResponseTemplate::new(429).insert_header("Retry-After", in_five_minutes.to_string()),
        )
        .mount(&app.upstream)
        .await;

    let response = app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(response.status(), 429);
    let wait: u64 = response.headers()["Retry-After"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((295..=300).contains(&wait), "{wait}");
}

#[tokio::test]
async fn a_wait_longer_than_max_retry_after_secs_is_capped_for_the_partner_and_the_poller() {
    let app = TestApp::spawn_configured("", |s| s.jobs.max_retry_after_secs = 600).await;
    app.upstream_accepts_kickoffs().await;
    upstream_status(
        &app,
        ResponseTemplate::new(202).insert_header("Retry-After", "86400"),
    )
    .await;
    let status_url = location(&app.post_envelope(&spec_group_route(), &seed()).await);

    let response = app.get(local(&app, &status_url)).await;

    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["Retry-After"], "600");
    let job_id = uuid::Uuid::parse_str(status_url.rsplit('/').next().unwrap()).unwrap();
    let job = app.state().store.get(job_id).await.unwrap().unwrap();
    let next = job.next_poll_at.unwrap() - chrono::Utc::now();
    assert!(next.num_seconds() <= 600, "{next}");
}

#[tokio::test]
async fn an_ehr_503_with_retry_after_is_a_503_with_it() {
    let app = TestApp::spawn().await;
    Mock::given(path_regex(r"\$export$"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "30"))
        .mount(&app.upstream)
        .await;

    let response = app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["Retry-After"], "30");
    assert_eq!(codes(&json_body(response).await), ["transient"]);
}

#[tokio::test]
async fn an_ehr_503_with_retry_after_at_status_is_a_503_with_it() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;
    upstream_status(
        &app,
        ResponseTemplate::new(503).insert_header("Retry-After", "45"),
    )
    .await;
    let status_url = location(&app.post_envelope(&spec_group_route(), &seed()).await);

    let response = app.get(local(&app, &status_url)).await;

    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["Retry-After"], "45");
}

#[tokio::test]
async fn an_ehr_refusing_the_gateways_credentials_is_a_502_security_not_the_partners_401() {
    let app = TestApp::spawn().await;
    Mock::given(path_regex(r"\$export$"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "security", "diagnostics": "No public keys found in the JWKS with kid canary-kid"}]})))
        .mount(&app.upstream)
        .await;

    let response = app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(response.status(), 502);
    let outcome = json_body(response).await;
    assert_eq!(codes(&outcome), ["security"]);
    let said = outcome.to_string();
    assert!(said.contains("gateway's own credentials"), "{said}");
    assert!(
        !said.contains("canary-kid"),
        "the EHR's explanation goes to the log: {said}"
    );
}

#[tokio::test]
async fn a_200_that_is_not_a_manifest_is_a_failed_poll_backed_off_and_eventually_fails_the_job() {
    let app = TestApp::spawn_configured("", |s| {
        s.worker.max_poll_failures = 3;
        s.jobs.poll_interval_secs = 1;
    })
    .await;
    app.upstream_accepts_kickoffs().await;
    upstream_status(
        &app,
        ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"),
    )
    .await;
    let status_url = location(&app.post_envelope(&spec_group_route(), &seed()).await);
    let job_id = uuid::Uuid::parse_str(status_url.rsplit('/').next().unwrap()).unwrap();

    let first = app.get(local(&app, &status_url)).await;
    assert_eq!(first.status(), 502);
    let soon = app.get(local(&app, &status_url)).await;
    assert_eq!(
        soon.status(),
        202,
        "answered from the store while backing off"
    );
    let polls = || async {
        app.upstream_requests()
            .await
            .iter()
            .filter(|r| r.url.path() == UPSTREAM_STATUS)
            .count()
    };
    assert_eq!(
        polls().await,
        1,
        "the EHR is not asked again during the backoff"
    );
    let job = app.state().store.get(job_id).await.unwrap().unwrap();
    assert_eq!(job.poll_failures, 1);
    assert!(job.next_poll_at.unwrap() > chrono::Utc::now());

    // Make every later poll due at once, until the failures run out.
    for _ in 0..5 {
        let job = app.state().store.get(job_id).await.unwrap().unwrap();
        if job.state == fhirgate::store::JobState::ExportFailed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(
            (job.next_poll_at.unwrap() - chrono::Utc::now())
                .num_milliseconds()
                .max(0) as u64
                + 50,
        ))
        .await;
        let _ = app.get(local(&app, &status_url)).await;
    }
    let job = app.state().store.get(job_id).await.unwrap().unwrap();
    assert_eq!(job.state, fhirgate::store::JobState::ExportFailed);
    assert_eq!(job.error_code.as_deref(), Some("upstream-poll-failed"));
    assert_eq!(polls().await, 3);
    let after = app.get(local(&app, &status_url)).await;
    assert_eq!(after.status(), 502);
    assert_eq!(polls().await, 3, "a failed job is not polled again");
}

#[tokio::test]
async fn a_kickoff_cut_off_by_a_crash_is_not_sent_again_until_the_partner_asks() {
    let app = TestApp::spawn_configured("", |s| s.jobs.pending_stale_secs = 3).await;
    // The EHR holds the first kick-off open; later ones it accepts at once.
    Mock::given(path_regex(r"\$export$"))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header(
                    "Content-Location",
                    format!("{}{UPSTREAM_STATUS}", app.upstream.uri()),
                )
                .set_delay(Duration::from_secs(30)),
        )
        .up_to_n_times(1)
        .mount(&app.upstream)
        .await;
    app.upstream_accepts_kickoffs().await;
    let client = app.client.clone();
    let url = app.url(&spec_group_route());
    let in_flight = tokio::spawn(async move { client.post(url).json(&seed()).send().await });
    for _ in 0..100 {
        if !app.upstream_kickoffs().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        app.upstream_kickoffs().await.len(),
        1,
        "the EHR holds the kick-off"
    );
    let settings = app.settings.clone();

    let app = app.crash_and_restart(settings).await;
    let _ = in_flight.await;
    // Past the reservation's staleness (PostgreSQL marks it then; SQLite at start).
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let retry = app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(retry.status(), 409);
    assert!(
        retry.headers().get("Retry-After").is_none(),
        "waiting does not help"
    );
    let outcome = json_body(retry).await;
    assert_eq!(codes(&outcome), ["conflict"]);
    let said = outcome["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        said.contains("may already have accepted")
            && said.contains("Prefer: retry-unknown-kickoff"),
        "{said}"
    );
    assert_eq!(
        app.upstream_kickoffs().await.len(),
        1,
        "no silent second export"
    );
    let stats = app.state().store.job_stats().await.unwrap();
    assert!(
        stats
            .by_state
            .iter()
            .any(|(s, n)| s == "kickoff-unknown" && *n == 1),
        "{stats:?}"
    );

    let asked = app
        .client
        .post(app.url(&spec_group_route()))
        .header("Prefer", "retry-unknown-kickoff")
        .json(&seed())
        .send()
        .await
        .unwrap();

    assert_eq!(asked.status(), 202);
    assert_eq!(app.upstream_kickoffs().await.len(), 2);
}

#[tokio::test]
async fn a_kickoff_still_in_flight_answers_409_with_a_short_retry_after() {
    let app = TestApp::spawn().await;
    Mock::given(path_regex(r"\$export$"))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header(
                    "Content-Location",
                    format!("{}{UPSTREAM_STATUS}", app.upstream.uri()),
                )
                .set_delay(Duration::from_millis(1500)),
        )
        .mount(&app.upstream)
        .await;
    let client = app.client.clone();
    let url = app.url(&spec_group_route());
    let first = tokio::spawn(async move { client.post(url).json(&seed()).send().await.unwrap() });
    for _ in 0..100 {
        if !app.upstream_kickoffs().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let second = app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(second.status(), 409);
    assert_eq!(second.headers()["Retry-After"], "2");
    assert_eq!(first.await.unwrap().status(), 202);
    assert_eq!(app.upstream_kickoffs().await.len(), 1);
}

#[tokio::test]
async fn the_window_between_the_ehrs_answer_and_its_record_is_measured() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;

    assert_eq!(
        app.post_envelope(&spec_group_route(), &seed())
            .await
            .status(),
        202
    );
    assert_eq!(
        app.post_envelope(&spec_group_route(), &seed())
            .await
            .status(),
        202
    );

    let metrics = app.get(app.url("/metrics")).await.text().await.unwrap();
    assert!(
        metrics.contains("fhirgate_kickoff_unrecorded_window_seconds_count 1\n"),
        "one upstream kick-off, one window (the replay made none): {metrics}"
    );
}

#[tokio::test]
async fn an_ehr_that_keeps_throttling_status_polls_is_waited_for_not_given_up_on() {
    let app = TestApp::spawn_configured("", |s| s.worker.max_poll_failures = 2).await;
    app.upstream_accepts_kickoffs().await;
    upstream_status(
        &app,
        ResponseTemplate::new(429).insert_header("Retry-After", "1"),
    )
    .await;
    let status_url = location(&app.post_envelope(&spec_group_route(), &seed()).await);

    for _ in 0..4 {
        let job = stored_job(&app, &status_url).await;
        if let Some(next) = job.next_poll_at {
            let wait = (next - chrono::Utc::now()).num_milliseconds().max(0) as u64;
            tokio::time::sleep(Duration::from_millis(wait + 50)).await;
        }
        assert_eq!(app.get(local(&app, &status_url)).await.status(), 429);
    }

    let job = stored_job(&app, &status_url).await;
    assert_eq!(
        job.state,
        fhirgate::store::JobState::Accepted,
        "still waiting"
    );
    assert!(job.poll_failures >= 4);
}
