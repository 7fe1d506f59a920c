//! The message log, the admin API, metrics and readiness.

use crate::helpers::*;
use serde_json::{Value, json};
use wiremock::matchers::path;
use wiremock::{Mock, ResponseTemplate};

const PARTNER_KEY: &str = "partner-key-for-tests-9e2a";
const SOURCE_ID: &str = "7ce6f387-c33c-417d-8682-81e83628cbd9";

/// TOML giving the gateway an admin key and one partner with an API key.
fn admin_and_partner_toml() -> String {
    crate::helpers::admin_and_partner_toml(PARTNER_KEY)
}

fn with_log_id(log_id: &str) -> Value {
    let mut envelope = seed();
    envelope["Meta"]["Logs"][0]["ID"] = json!(log_id);
    envelope
}

/// Times, ids and durations vary run to run; everything else is the contract.
fn redact_record(mut r: Value) -> Value {
    for key in ["time", "attemptId", "jobId"] {
        if !r[key].is_null() {
            r[key] = json!(format!("[{key}]"));
        }
    }
    r["durationMs"] = json!("[durationMs]");
    r
}

#[tokio::test]
async fn an_accepted_kickoff_is_in_the_message_log_with_its_fields_and_its_upstream_attempt() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    app.upstream_accepts_kickoffs().await;

    let kick = app.post_envelope(&spec_group_route(), &seed()).await;
    assert_eq!(kick.status(), 202);
    let job_url = kick.headers()["Content-Location"]
        .to_str()
        .unwrap()
        .to_owned();
    let job_id = job_url.rsplit('/').next().unwrap().to_owned();

    let (status, page) = admin_get(&app, &format!("/admin/logs?logId={SEED_LOG_ID}")).await;
    assert_eq!(status, 200, "{page}");
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{page}");
    let entry = &entries[0];
    assert_eq!(entry["logId"], SEED_LOG_ID);
    assert_eq!(entry["jobId"], job_id.as_str());
    assert_eq!(entry["gatewayStatus"], 202);
    assert_eq!(entry["upstreamStatus"], 202);
    assert!(entry["durationMs"].as_f64().unwrap() > 0.0);

    let (status, detail) = admin_get(&app, &format!("/admin/logs/{SEED_LOG_ID}")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["attempts"][0]["attemptId"], entry["attemptId"]);
    assert_eq!(detail["jobs"][0]["id"], job_id.as_str());
    let redacted = json!({
        "logId": detail["logId"],
        "requests": detail["requests"].as_array().unwrap().iter().cloned().map(redact_record).collect::<Vec<_>>(),
        "attempts": detail["attempts"].as_array().unwrap().iter().cloned().map(redact_record).collect::<Vec<_>>(),
        "jobs": detail["jobs"].as_array().unwrap().len(),
    });
    insta::assert_json_snapshot!("message_log_for_an_accepted_kickoff", redacted);
}

#[tokio::test]
async fn a_refused_request_is_logged_with_its_status_and_error_code_and_no_upstream_call() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let log_id = "0b5f4e2c-3a3e-4c55-9d0c-6f1f4f3a2b10";
    let mut bad = with_log_id(log_id);
    bad["_type"] = json!("Patient,NotAType");

    let r = app.post_envelope(&spec_group_route(), &bad).await;
    assert_eq!(r.status(), 400);

    let (_, page) = admin_get(&app, "/admin/logs?status=4xx").await;
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{page}");
    assert_eq!(entries[0]["gatewayStatus"], 400);
    assert_eq!(entries[0]["errorCode"], "invalid");
    assert_eq!(entries[0]["upstreamStatus"], Value::Null);
    assert_eq!(entries[0]["jobId"], Value::Null);
    let (_, upstream) = admin_get(&app, "/admin/logs?kind=upstream").await;
    assert_eq!(upstream["entries"], json!([]), "no upstream call was made");
}

#[tokio::test]
async fn status_checks_and_downloads_are_logged_under_the_kickoffs_log_id() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let location = kicked_off(&app).await;
    Mock::given(path(UPSTREAM_STATUS))
        .respond_with(ResponseTemplate::new(202).insert_header("Retry-After", "0"))
        .mount(&app.upstream)
        .await;

    let r = app.get(local(&app, &location)).await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["X-Request-ID"], SEED_LOG_ID);

    let (_, detail) = admin_get(&app, &format!("/admin/logs/{SEED_LOG_ID}")).await;
    let events: Vec<&str> = detail["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["group-export", "status-check"]);
    let operations: Vec<&str> = detail["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["route"].as_str().unwrap())
        .collect();
    assert_eq!(operations, ["kickoff", "status"]);
}

#[tokio::test]
async fn log_filters_and_paging_find_what_was_asked_for() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    app.upstream_accepts_kickoffs().await;
    let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for id in &ids {
        let r = app
            .post_envelope(&spec_group_route(), &with_log_id(id))
            .await;
        assert_eq!(r.status(), 202);
    }
    let r = app
        .post_envelope(&group_route("no-such-ehr", "Development", "g"), &seed())
        .await;
    assert_eq!(r.status(), 404);
    let mut bad = with_log_id(&uuid::Uuid::new_v4().to_string());
    bad["_since"] = json!("yesterday");
    assert_eq!(
        app.post_envelope(&spec_group_route(), &bad).await.status(),
        400
    );

    let count = |page: &Value| page["entries"].as_array().unwrap().len();
    let (_, all) = admin_get(&app, "/admin/logs").await;
    assert_eq!(count(&all), 5);
    assert_eq!(all["entries"][0]["gatewayStatus"], 400, "newest first");
    let (_, ok) = admin_get(&app, "/admin/logs?status=2xx").await;
    assert_eq!(count(&ok), 3);
    let (_, refused) = admin_get(&app, "/admin/logs?status=4xx").await;
    assert_eq!(count(&refused), 2);
    let (_, elsewhere) = admin_get(&app, "/admin/logs?destination=no-such-ehr").await;
    assert_eq!(count(&elsewhere), 1);
    let (_, not_found) = admin_get(&app, "/admin/logs?status=404").await;
    assert_eq!(count(&not_found), 1);
    assert_eq!(not_found["entries"][0]["destination"], "no-such-ehr");
    let (_, dev) = admin_get(
        &app,
        "/admin/logs?destination=spec-ehr&environment=Development&eventType=group-export",
    )
    .await;
    assert_eq!(count(&dev), 4);
    let (_, by_source) = admin_get(&app, &format!("/admin/logs?source={SOURCE_ID}")).await;
    assert_eq!(count(&by_source), 4, "{by_source}");
    let (_, one) = admin_get(&app, &format!("/admin/logs?logId={}", ids[1])).await;
    assert_eq!(count(&one), 1);
    let (_, future) = admin_get(&app, "/admin/logs?since=2999-01-01T00:00:00Z").await;
    assert_eq!(count(&future), 0);
    let (_, past) = admin_get(&app, "/admin/logs?until=2000-01-01T00:00:00Z").await;
    assert_eq!(count(&past), 0);
    let (_, window) = admin_get(
        &app,
        "/admin/logs?since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(count(&window), 5);

    let (_, first) = admin_get(&app, "/admin/logs?limit=2").await;
    assert_eq!(count(&first), 2);
    assert_eq!(first["total"], 5, "the total counts every page");
    assert_eq!(first["totalCapped"], false);
    let next = first["next"].as_str().expect("a next page").to_owned();
    assert!(
        next.starts_with("/admin/logs?limit=2&cursor="),
        "keyset paging: {next}"
    );
    let (_, second) = admin_get(&app, &next).await;
    assert_eq!(second["total"], 5, "the total counts every page");
    assert_eq!(count(&second), 2);
    let (_, third) = admin_get(&app, second["next"].as_str().unwrap()).await;
    assert_eq!(count(&third), 1);
    assert!(third.get("next").is_none(), "the last page has no next");
    let mut seen: Vec<Value> = [first, second, third]
        .iter()
        .flat_map(|p| p["entries"].as_array().unwrap().clone())
        .map(|e| e["logId"].clone())
        .collect();
    seen.sort_by_key(|v| v.to_string());
    seen.dedup();
    assert_eq!(seen.len(), 5, "pages neither repeat nor skip");
}

#[tokio::test]
async fn a_mistyped_or_bad_filter_is_a_400_naming_it() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    for (query, expression) in [
        ("destinaton=x", "destinaton"),
        ("status=6xx", "status"),
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
        ("logId=not-a-uuid", "logId"),
    ] {
        let (status, outcome) = admin_get(&app, &format!("/admin/logs?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(expressions(&outcome), [expression], "{query}");
    }
    let (status, outcome) = admin_get(&app, "/admin/jobs?state=finished").await;
    assert_eq!(status, 400);
    assert_eq!(expressions(&outcome), ["state"]);
    let (status, _) = admin_get(&app, "/admin/logs/not-a-uuid").await;
    assert_eq!(status, 400);
    let (status, _) = admin_get(&app, &format!("/admin/logs/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(status, 404);
    let (status, _) = admin_get(&app, &format!("/admin/jobs/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn admin_routes_refuse_partner_credentials_and_partner_routes_refuse_the_admin_key() {
    let app = TestApp::spawn_with(&admin_and_partner_toml()).await;
    app.upstream_accepts_kickoffs().await;
    for route in [
        "/admin/logs",
        "/admin/jobs",
        &format!("/admin/logs/{SEED_LOG_ID}"),
    ] {
        let as_partner = app.get_as(PARTNER_KEY, app.url(route)).await;
        assert_eq!(as_partner.status(), 403, "{route}");
        let outcome = json_body(as_partner).await;
        assert_eq!(codes(&outcome), ["forbidden"]);
        let anonymous = app.get(app.url(route)).await;
        assert_eq!(anonymous.status(), 401, "{route}");
        let wrong = app.get_as("not-the-admin-key", app.url(route)).await;
        assert_eq!(wrong.status(), 401, "{route}");
    }
    let (status, _) = admin_get(&app, "/admin/logs").await;
    assert_eq!(status, 200);

    let admin_as_partner = app
        .post_envelope_as(ADMIN_KEY, &spec_group_route(), &seed())
        .await;
    assert_eq!(admin_as_partner.status(), 401);
    expect_kickoffs(&app, 0).await;
}

#[tokio::test]
async fn with_no_admin_key_configured_the_admin_api_is_closed() {
    let app = TestApp::spawn().await;
    let (status, outcome) = admin_get(&app, "/admin/logs").await;
    assert_eq!(status, 401);
    assert_eq!(codes(&outcome), ["security"]);
}

#[tokio::test]
async fn admin_jobs_show_state_attempts_last_upstream_status_and_next_poll() {
    let app = TestApp::spawn_with(&admin_and_partner_toml()).await;
    app.upstream_accepts_kickoffs().await;
    let kick = app
        .post_envelope_as(PARTNER_KEY, &spec_group_route(), &seed())
        .await;
    assert_eq!(kick.status(), 202);
    let location = kick.headers()["Content-Location"]
        .to_str()
        .unwrap()
        .to_owned();
    let job_id = location.rsplit('/').next().unwrap().to_owned();
    Mock::given(path(UPSTREAM_STATUS))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("Retry-After", "120")
                .insert_header("X-Progress", "40%"),
        )
        .mount(&app.upstream)
        .await;
    let poll = app.get_as(PARTNER_KEY, local(&app, &location)).await;
    assert_eq!(poll.status(), 202);

    let (status, page) = admin_get(&app, "/admin/jobs?state=accepted&destination=spec-ehr").await;
    assert_eq!(status, 200, "{page}");
    let job = &page["jobs"][0];
    assert_eq!(job["id"], job_id.as_str());
    assert_eq!(job["state"], "accepted");
    assert_eq!(job["source"], SOURCE_ID);
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["lastUpstreamStatus"], 202);
    assert_eq!(job["progress"], "40%");
    assert!(job["nextPollAt"].is_string(), "{job}");
    let (_, none) = admin_get(&app, "/admin/jobs?state=completed").await;
    assert_eq!(none["jobs"], json!([]));

    let (status, detail) = admin_get(&app, &format!("/admin/jobs/{job_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(detail["kickoffAttempts"].as_array().unwrap().len(), 1);
    assert_eq!(detail["kickoffAttempts"][0]["outcome"], "accepted");
    let calls: Vec<&str> = detail["upstreamCalls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["route"].as_str().unwrap())
        .collect();
    assert_eq!(calls, ["status", "kickoff"], "newest first");
    let text = detail.to_string();
    assert!(!text.contains(UPSTREAM_STATUS), "no upstream URL: {text}");
    assert!(!text.contains("manifest"), "{text}");
}

#[tokio::test]
async fn message_log_records_older_than_the_retention_are_pruned_by_the_gateway() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let record =
        |days_ago: i64| request_record(chrono::Utc::now() - chrono::Duration::days(days_ago));
    let many: Vec<_> = (0..10_050).map(|_| record(2)).collect();
    app.state().store.append_log(many).await.unwrap();
    let (_, capped) = admin_get(&app, "/admin/logs?limit=1").await;
    assert_eq!(capped["total"], 10_000, "counted no further than 10,000");
    assert_eq!(capped["totalCapped"], true);
    let (_, bad_cursor) = admin_get(&app, "/admin/logs?cursor=yesterday").await;
    assert_eq!(bad_cursor["issue"][0]["expression"][0], "cursor");
    app.state()
        .store
        .prune_logs(chrono::Utc::now(), 100_000)
        .await
        .unwrap();

    let batch: Vec<_> = (0..1_234).map(|_| record(1)).collect();
    app.state().store.append_log(batch).await.unwrap();
    let written = app
        .state()
        .store
        .count_logs(
            &fhirgate::store::LogFilter::default(),
            1_000_000,
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(
        written,
        Some(1_234),
        "a batch larger than one INSERT is written whole"
    );
    let (old, recent) = (record(31), record(29));
    app.state()
        .store
        .append_log(vec![old.clone(), recent.clone()])
        .await
        .unwrap();
    let (_, page) = admin_get(
        &app,
        "/admin/logs?since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z&limit=1",
    )
    .await;
    assert_eq!(page["total"], 1_236);

    // More past the retention than one pruning transaction takes (1,000 records each).
    let old_batch: Vec<_> = (0..12_000).map(|_| record(40)).collect();
    app.state().store.append_log(old_batch).await.unwrap();

    // Pruning runs beside the writer when the gateway starts and hourly after, in short
    // transactions; [log] retention_days = 30 by default.
    let settings = app.settings.clone();
    let app = app.with_settings(settings).await;
    let mut total = Value::Null;
    for _ in 0..100 {
        total = admin_get(&app, "/admin/logs?limit=1").await.1["total"].clone();
        if total == 1_235 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(total, 1_235, "only the records past the retention went");
    let (_, gone) = admin_get(&app, &format!("/admin/logs?logId={}", old.log_id)).await;
    assert_eq!(gone["total"], 0);
    let (_, kept) = admin_get(&app, &format!("/admin/logs?logId={}", recent.log_id)).await;
    assert_eq!(kept["total"], 1);
    let scraped = app.get(app.url("/metrics")).await.text().await.unwrap();
    assert_eq!(
        metric(
            &scraped,
            r#"fhirgate_retention_total{kind="message_log",outcome="pruned"}"#
        ),
        12_001.0,
        "what the gateway pruned is counted"
    );
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn metrics_move_when_traffic_flows_and_carry_no_ids() {
    let app = TestApp::spawn().await;
    let scrape = || async {
        let r = app.get(app.url("/metrics")).await;
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        r.text().await.unwrap()
    };
    let kickoffs = r#"fhirgate_http_requests_total{route="/fhir/R4/{slug}/{env}/Group/{group_id}/$export",method="POST",status="202"}"#;
    let upstream = r#"fhirgate_upstream_requests_total{destination="spec-ehr",environment="Development",operation="kickoff",outcome="ok"}"#;
    let latency = r#"fhirgate_upstream_request_duration_seconds_count{destination="spec-ehr",environment="Development",operation="kickoff",outcome="ok"}"#;
    let before = scrape().await;
    assert_eq!(metric(&before, kickoffs), 0.0);

    let location = kicked_off(&app).await;
    Mock::given(path(UPSTREAM_STATUS))
        .respond_with(ResponseTemplate::new(200).set_body_json(manifest(&app.upstream.uri(), None)))
        .mount(&app.upstream)
        .await;
    Mock::given(path("/files/patient.ndjson"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string("{\"resourceType\":\"Patient\"}\n"),
        )
        .mount(&app.upstream)
        .await;
    assert_eq!(app.get(local(&app, &location)).await.status(), 200);
    let file = local(&app, &location).replace("export-status", "export-file") + "/0";
    let download = app.get(file).await;
    assert_eq!(download.status(), 200);
    let body = download.bytes().await.unwrap();

    let after = scrape().await;
    assert_eq!(metric(&after, kickoffs), 1.0, "{after}");
    assert_eq!(metric(&after, upstream), 1.0, "{after}");
    assert_eq!(metric(&after, latency), 1.0, "{after}");
    assert_eq!(
        metric(
            &after,
            r#"fhirgate_upstream_requests_total{destination="spec-ehr",environment="Development",operation="status",outcome="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            r#"fhirgate_file_bytes_streamed_total{destination="spec-ehr",environment="Development"}"#
        ),
        body.len() as f64
    );
    assert_eq!(
        metric(&after, r#"fhirgate_jobs{state="completed"}"#),
        1.0,
        "{after}"
    );
    assert!(after.contains("fhirgate_poller_lag_seconds"), "{after}");
    assert!(
        after.contains("# TYPE fhirgate_upstream_token_fetches counter"),
        "{after}"
    );
    let uuid = regex_lite_uuid();
    assert!(!after.lines().any(uuid), "no ids in labels: {after}");
}

/// True when a line holds something shaped like a UUID.
fn regex_lite_uuid() -> impl Fn(&str) -> bool {
    |line: &str| {
        line.as_bytes().windows(36).any(|w| {
            w.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            })
        })
    }
}

#[tokio::test]
async fn readiness_turns_503_when_the_store_goes_away_and_200_when_it_returns() {
    let Ok(admin_url) = std::env::var("FHIRGATE_TEST_POSTGRES_URL") else {
        eprintln!("PostgreSQL only: an embedded SQLite file cannot go away and come back");
        return;
    };
    if admin_url.is_empty() {
        return;
    }
    let proxy = crate::helpers::TcpProxy::start("127.0.0.1:5432").await;
    let app = TestApp::spawn_configured("", |s| {
        let mut url = url::Url::parse(&s.store.url).unwrap();
        url.set_port(Some(proxy.port())).unwrap();
        s.store.url = url.to_string();
    })
    .await;
    let ready = || async { app.get(app.url("/readyz")).await.status().as_u16() };
    assert_eq!(ready().await, 200);

    proxy.cut();
    assert_eq!(ready().await, 503);
    assert_eq!(app.get(app.url("/healthz")).await.status(), 200);

    proxy.restore();
    let mut status = 0;
    for _ in 0..50 {
        status = ready().await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_nul_in_an_admin_filter_is_a_400_naming_it_and_never_reaches_the_store() {
    let app = TestApp::spawn_with(&admin_toml()).await;

    for (route, name) in [
        ("/admin/logs?source=%00", "source"),
        ("/admin/logs?destination=a%00b", "destination"),
        ("/admin/logs?environment=%00", "environment"),
        ("/admin/logs?eventType=%00", "eventType"),
        ("/admin/jobs?source=%00", "source"),
        ("/admin/jobs?destination=%00", "destination"),
    ] {
        let (status, outcome) = admin_get(&app, route).await;
        assert_eq!(status, 400, "{route}: {outcome}");
        assert_eq!(expressions(&outcome), [name], "{route}");
    }
}

#[tokio::test]
async fn a_nul_in_a_partner_path_is_logged_without_it() {
    let app = TestApp::spawn_with(&admin_toml()).await;

    let response = app
        .post_envelope("/fhir/R4/no%00ehr/Development/Group/g/$export", &seed())
        .await;

    assert_eq!(response.status(), 404);
    let (status, page) = admin_get(&app, "/admin/logs?status=404").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["entries"][0]["destination"], "noehr");
}

#[tokio::test]
async fn with_metrics_listen_set_metrics_are_served_only_on_the_internal_address() {
    let app = TestApp::spawn_configured("", |s| {
        s.server.metrics_listen = Some("127.0.0.1:0".into());
    })
    .await;
    let internal = app
        .metrics_address
        .clone()
        .expect("a metrics listener was bound");

    let there = app.get(format!("{internal}/metrics")).await;
    let public = app.get(app.url("/metrics")).await;
    let partner_route_there = app.get(format!("{internal}/healthz")).await;

    assert_eq!(there.status(), 200);
    assert!(there.text().await.unwrap().contains("fhirgate_"));
    assert_eq!(public.status(), 404, "not on the public listener");
    assert_eq!(partner_route_there.status(), 404, "only /metrics there");
    assert_eq!(app.get(app.url("/healthz")).await.status(), 200);
}

#[tokio::test]
async fn paging_by_cursor_visits_every_record_once_even_when_they_share_a_time() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let at = chrono::Utc::now();
    let batch: Vec<_> = (0..7)
        // Three records at one instant, the rest a second apart.
        .map(|i| request_record(at - chrono::Duration::seconds(i64::from(i.max(2)))))
        .collect();
    let mut expected: Vec<_> = batch.iter().map(|r| r.log_id.to_string()).collect();
    expected.sort();
    app.state().store.append_log(batch).await.unwrap();
    let mut seen = Vec::new();
    let mut next = Some("/admin/logs?limit=2".to_owned());
    while let Some(page) = next {
        let (status, body) = admin_get(&app, &page).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["total"], 7);
        for entry in body["entries"].as_array().unwrap() {
            seen.push(entry["logId"].as_str().unwrap().to_owned());
        }
        next = body["next"].as_str().map(str::to_owned);
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 7, "no record twice");
    assert_eq!(unique, expected, "every record");
}

#[tokio::test]
async fn a_count_that_outruns_its_budget_is_stopped_by_the_store_and_says_so() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let record = request_record(chrono::Utc::now());
    let batch = vec![record; 50_000];
    app.state().store.append_log(batch).await.unwrap();
    let store = &app.state().store;
    let all = fhirgate::store::LogFilter::default();
    let generous = store
        .count_logs(&all, 1_000_000, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(generous, Some(50_000));
    let hurried = store
        .count_logs(&all, 1_000_000, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(hurried, None, "no time to count 50,000 records");
    // The store is fine afterwards: the same connection counts again.
    let again = store
        .count_logs(&all, 10, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(again, Some(10));
}
