//! A partner posts a Redox envelope and gets a system-export-response back.

use crate::helpers::*;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

#[tokio::test]
async fn the_seed_envelope_is_kicked_off_upstream_and_answered_with_a_system_export_response() {
    let app = TestApp::spawn().await;
    Mock::given(method("GET"))
        .and(path("/fhir/r4/Group/example-group-id/$export"))
        .and(query_param("_type", "Patient,Encounter,Observation"))
        .and(query_param("_since", "2024-01-01T00:00:00Z"))
        .and(query_param("_outputFormat", "application/fhir+ndjson"))
        .and(header("Accept", "application/fhir+json"))
        .and(header("Prefer", "respond-async"))
        .and(header(
            "Authorization",
            format!("Bearer {UPSTREAM_TOKEN}").as_str(),
        ))
        .and(header("X-Request-ID", SEED_LOG_ID))
        .respond_with(ResponseTemplate::new(202).insert_header(
            "Content-Location",
            format!("{}/fhir/r4/bulk-export/jobs/42", app.upstream.uri()),
        ))
        .expect(1)
        .mount(&app.upstream)
        .await;

    let response = app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(response.status(), 202);
    let location = response.headers()["Content-Location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(response.headers()["X-Request-ID"], SEED_LOG_ID);
    let body = json_body(response).await;
    assert_eq!(body["contentLocation"], location.as_str());
    assert!(location.starts_with(&format!(
        "{PUBLIC_URL}/fhir/R4/spec-ehr/Development/export-status/"
    )));
    assert_eq!(body["status"], 202);
    assert_eq!(body["Meta"]["EventType"], "system-export-response");
    assert_eq!(body["Meta"]["Logs"][0]["ID"], SEED_LOG_ID);
    assert_eq!(
        body["Meta"]["Logs"][0]["AttemptID"], "925d1617-2fe0-468c-a14c-f8c04b572c54",
        "the partner's AttemptID is echoed, as in seeds 000 and 004"
    );
    let stamped = body["Meta"]["EventDateTime"].as_str().unwrap();
    assert!(
        stamped.ends_with('Z') && stamped.len() == 24,
        "UTC with milliseconds: {stamped}"
    );
    insta::assert_json_snapshot!("seed_envelope_response", redact_envelope(body));
}

#[tokio::test]
async fn the_upstream_status_url_is_never_shown_to_the_partner() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;

    let response = app.post_envelope(&spec_group_route(), &seed()).await;
    let headers = format!("{:?}", response.headers());
    let body = response.text().await.unwrap();

    assert!(!body.contains(&app.upstream.uri()) && !headers.contains(&app.upstream.uri()));
    assert!(!body.contains("upstream-job-1") && !headers.contains("upstream-job-1"));
}

#[tokio::test]
async fn an_envelope_without_a_log_id_gets_a_new_log_id_and_attempt_id() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;
    let envelope = fixture("envelopes/group-export/valid/minimal.json");

    let response = app.post_envelope(&spec_group_route(), &envelope).await;

    assert_eq!(response.status(), 202);
    let log_id = response.headers()["X-Request-ID"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = json_body(response).await;
    assert_eq!(body["Meta"]["Logs"][0]["ID"], log_id.as_str());
    assert!(uuid::Uuid::parse_str(&log_id).is_ok());
    assert!(uuid::Uuid::parse_str(body["Meta"]["Logs"][0]["AttemptID"].as_str().unwrap()).is_ok());
    let sent = app.upstream_kickoffs().await;
    assert_eq!(sent[0].headers["x-request-id"], log_id.as_str());
    insta::assert_json_snapshot!("minimal_envelope_response", redact_envelope(body));
}

#[tokio::test]
async fn a_get_with_a_json_body_is_accepted_like_a_post() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;

    let response = app
        .client
        .get(app.url(&spec_group_route()))
        .header("Content-Type", "application/json")
        .body(seed().to_string())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 202);
    assert_eq!(
        json_body(response).await["Meta"]["EventType"],
        "system-export-response"
    );
}

#[tokio::test]
async fn patient_and_system_export_envelopes_reach_their_own_upstream_operations() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;

    let patient = app
        .post_envelope(
            "/fhir/R4/spec-ehr/Development/Patient/$export",
            &fixture("envelopes/patient-export/valid/seed-fields.json"),
        )
        .await;
    let system = app
        .post_envelope(
            "/fhir/R4/spec-ehr/Development/$export",
            &fixture("envelopes/system-export/valid/types-and-since.json"),
        )
        .await;

    assert_eq!(patient.status(), 202);
    assert_eq!(system.status(), 202);
    let paths: Vec<String> = app
        .upstream_kickoffs()
        .await
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(paths, ["/fhir/r4/Patient/$export", "/fhir/r4/$export"]);
}

#[tokio::test]
async fn patients_go_upstream_in_a_parameters_body_by_post() {
    let app = TestApp::spawn().await;
    Mock::given(method("POST"))
        .and(path("/fhir/r4/Group/example-group-id/$export"))
        .and(header("Content-Type", "application/fhir+json"))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("Content-Location", format!("{}/jobs/7", app.upstream.uri())),
        )
        .expect(1)
        .mount(&app.upstream)
        .await;

    let response = app
        .post_envelope(
            &spec_group_route(),
            &fixture("envelopes/group-export/valid/all-parameters.json"),
        )
        .await;

    assert_eq!(response.status(), 202);
    let sent = app.upstream_kickoffs().await;
    assert!(
        sent[0].url.query().is_none(),
        "all parameters travel in the body"
    );
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    let patients: Vec<&Value> = body["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "patient")
        .map(|p| &p["valueReference"]["reference"])
        .collect();
    assert_eq!(patients, [&json!("Patient/123"), &json!("Patient/abc-456")]);
}

#[tokio::test]
async fn an_unknown_destination_or_environment_is_404_and_the_upstream_is_not_called() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 0).await;

    for route in [
        group_route("no-such-ehr", "Development", "example-group-id"),
        group_route("spec-ehr", "Production", "example-group-id"),
        group_route("spec-ehr", "development", "example-group-id"),
        group_route("spec-ehr", "Sandbox", "example-group-id"),
    ] {
        let response = app.post_envelope(&route, &seed()).await;
        assert_eq!(response.status(), 404, "{route}");
        assert_eq!(response.headers()["Content-Type"], "application/fhir+json");
        assert_eq!(codes(&json_body(response).await), ["not-found"]);
    }
}

#[tokio::test]
async fn a_group_id_that_is_not_a_fhir_id_in_the_path_is_refused_before_any_upstream_call() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 0).await;

    for group in ["bad%20id", "..%2F", "a_b", &"a".repeat(65)] {
        let response = app
            .post_envelope(&group_route("spec-ehr", "Development", group), &seed())
            .await;
        assert_eq!(response.status(), 400, "{group}");
        let outcome = json_body(response).await;
        assert!(
            expressions(&outcome).contains(&"groupId".to_owned()),
            "{outcome}"
        );
    }
}

#[tokio::test]
async fn a_body_over_64_kib_is_refused_with_413() {
    let app = TestApp::spawn().await;
    let mut envelope = seed();
    envelope["Meta"]["FacilityCode"] = Value::String("x".repeat(70 * 1024));

    let response = app.post_envelope(&spec_group_route(), &envelope).await;

    assert_eq!(response.status(), 413);
    let outcome = json_body(response).await;
    assert_eq!(codes(&outcome), ["too-long"]);
    insta::assert_json_snapshot!("body_too_large", outcome);
}

#[tokio::test]
async fn a_body_that_is_not_declared_as_json_is_refused_with_415() {
    let app = TestApp::spawn().await;

    let response = app
        .post_raw(
            &spec_group_route(),
            "text/plain",
            seed().to_string().into_bytes(),
        )
        .await;

    assert_eq!(response.status(), 415);
    let outcome = json_body(response).await;
    assert_eq!(expressions(&outcome), ["Content-Type"]);
    insta::assert_json_snapshot!("body_not_json_content_type", outcome);
}

#[tokio::test]
async fn malformed_json_is_a_400_structure_error_that_does_not_echo_the_body() {
    let app = TestApp::spawn().await;

    let response = app
        .post_raw(
            &spec_group_route(),
            "application/json",
            br#"{"Meta": {"DataModel": "secret-value"#.to_vec(),
        )
        .await;

    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(!text.contains("secret-value"));
    let outcome: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(codes(&outcome), ["structure"]);
    insta::assert_json_snapshot!("malformed_json", outcome);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_with_an_operation_outcome() {
    let app = TestApp::spawn().await;

    let missing = app.get(app.url("/fhir/R4/spec-ehr/Development/Nope")).await;
    let wrong_method = app
        .client
        .delete(app.url(&spec_group_route()))
        .send()
        .await
        .unwrap();

    assert_eq!(missing.status(), 404);
    assert_eq!(codes(&json_body(missing).await), ["not-found"]);
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(codes(&json_body(wrong_method).await), ["not-supported"]);
}

#[tokio::test]
async fn an_invalid_envelope_lists_every_problem_at_once() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 0).await;

    let response = app
        .post_envelope(
            &spec_group_route(),
            &fixture("envelopes/group-export/invalid/many-problems-at-once.json"),
        )
        .await;

    assert_eq!(response.status(), 400);
    let outcome = json_body(response).await;
    let mut named = expressions(&outcome);
    named.sort();
    assert_eq!(
        named,
        ["Meta.DataModel", "_outputFormat", "_since", "_type", "id"]
    );
}

#[tokio::test]
async fn health_and_readiness_answer_without_credentials() {
    let app = TestApp::spawn().await;

    assert_eq!(app.get(app.url("/healthz")).await.status(), 200);
    assert_eq!(app.get(app.url("/readyz")).await.status(), 200);
}

#[tokio::test]
async fn a_client_that_accepts_no_json_is_told_406_naming_accept() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 0).await;

    let response = app
        .client
        .post(app.url(&spec_group_route()))
        .header("Accept", "text/html")
        .json(&seed())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 406);
    assert_eq!(expressions(&json_body(response).await), ["Accept"]);
}
