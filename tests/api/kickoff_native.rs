//! Standard Bulk Data clients use the same routes FHIR-natively: GET with a query, POST with Parameters.

use crate::helpers::*;
use serde_json::{Value, json};

fn native_get(app: &TestApp, path_and_query: &str) -> reqwest::RequestBuilder {
    app.client
        .get(app.url(path_and_query))
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
}

#[tokio::test]
async fn a_get_with_query_parameters_is_a_bulk_data_kickoff() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;

    let response = native_get(
        &app,
        "/fhir/R4/spec-ehr/Development/Group/example-group-id/$export?_type=Patient&_type=Observation&_since=2024-01-01T00:00:00%2B05:00",
    )
    .send()
    .await
    .unwrap();

    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["Content-Type"], "application/fhir+json");
    let location = response.headers()["Content-Location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(location.starts_with(&format!(
        "{PUBLIC_URL}/fhir/R4/spec-ehr/Development/export-status/"
    )));
    let outcome = json_body(response).await;
    assert_eq!(codes(&outcome), ["informational"]);
    insta::assert_json_snapshot!("native_get_accepted", outcome);
    let sent = &app.upstream_kickoffs().await[0];
    assert_eq!(
        sent.url.query(),
        Some("_since=2024-01-01T00:00:00%2B05:00&_type=Patient,Observation"),
        "repeated _type joined with commas, '+' percent-encoded"
    );
}

#[tokio::test]
async fn repeated_type_filters_go_upstream_as_repeated_parameters() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;

    let response = native_get(
        &app,
        "/fhir/R4/spec-ehr/Development/$export?_type=Observation,MedicationRequest&_typeFilter=Observation%3Fstatus%3Dfinal&_typeFilter=MedicationRequest%3Fstatus%3Dactive",
    )
    .send()
    .await
    .unwrap();

    assert_eq!(response.status(), 202);
    let sent = &app.upstream_kickoffs().await[0];
    let filters: Vec<String> = sent
        .url
        .query_pairs()
        .filter(|(k, _)| k == "_typeFilter")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(
        filters,
        [
            "Observation?status=final",
            "MedicationRequest?status=active"
        ]
    );
    assert!(
        sent.url
            .query()
            .unwrap()
            .contains("Observation%3Fstatus%3Dfinal")
    );
}

#[tokio::test]
async fn a_post_with_a_parameters_body_carries_patients() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;
    let parameters = json!({
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Patient,Observation"},
            {"name": "patient", "valueReference": {"reference": "Patient/123"}},
            {"name": "patient", "valueReference": {"reference": "Patient/456"}},
            {"name": "allowPartialManifests", "valueBoolean": true}
        ]
    });

    let response = app
        .client
        .post(app.url("/fhir/R4/spec-ehr/Development/Patient/$export"))
        .header("Content-Type", "application/fhir+json")
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .body(parameters.to_string())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 202);
    let sent = &app.upstream_kickoffs().await[0];
    assert_eq!(sent.method.as_str(), "POST");
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    insta::assert_json_snapshot!(
        "native_parameters_forwarded_upstream",
        crate::upstream_requests::redact_patients(body)
    );
}

#[tokio::test]
async fn a_native_kickoff_without_prefer_respond_async_is_refused() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 0).await;

    let response = app
        .get(app.url("/fhir/R4/spec-ehr/Development/$export?_type=Patient"))
        .await;

    assert_eq!(response.status(), 400);
    assert_eq!(expressions(&json_body(response).await), ["Prefer"]);
}

#[tokio::test]
async fn an_unknown_query_parameter_is_refused_unless_handling_is_lenient() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;
    let route = "/fhir/R4/spec-ehr/Development/$export?_type=Patient&_count=10";

    let strict = native_get(&app, route).send().await.unwrap();
    let lenient = native_get(&app, route)
        .header("Prefer", "handling=lenient")
        .send()
        .await
        .unwrap();

    assert_eq!(strict.status(), 400);
    assert_eq!(expressions(&json_body(strict).await), ["_count"]);
    assert_eq!(lenient.status(), 202);
    let outcome = json_body(lenient).await;
    assert_eq!(codes(&outcome), ["informational", "not-supported"]);
    assert_eq!(expressions(&outcome), ["_count"]);
    assert_eq!(
        app.upstream_kickoffs().await[0].url.query(),
        Some("_type=Patient")
    );
}

#[tokio::test]
async fn invalid_native_parameters_are_refused_naming_each_one() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 0).await;

    let response = native_get(
        &app,
        "/fhir/R4/spec-ehr/Development/Group/g1/$export?_type=Bogus&_since=2024-01-01&_outputFormat=csv&_outputFormat=ndjson",
    )
    .send()
    .await
    .unwrap();

    assert_eq!(response.status(), 400);
    let outcome = json_body(response).await;
    let mut named = expressions(&outcome);
    named.sort();
    named.dedup();
    assert_eq!(named, ["_outputFormat", "_since", "_type"]);
    insta::assert_json_snapshot!("native_invalid_parameters", outcome);
}

#[tokio::test]
async fn a_native_kickoff_keeps_the_partners_x_request_id_as_its_log_id() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;
    let request_id = "5a0e9c62-1f55-4b8e-9d8f-3b2f3c9e7a41";

    let response = native_get(&app, "/fhir/R4/spec-ehr/Development/$export?_type=Patient")
        .header("X-Request-ID", request_id)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["X-Request-ID"], request_id);
    let sent = &app.upstream_kickoffs().await[0];
    assert_eq!(sent.headers["x-request-id"], request_id);
}

#[tokio::test]
async fn an_x_request_id_that_is_not_a_uuid_is_replaced_not_echoed() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;

    let response = native_get(&app, "/fhir/R4/spec-ehr/Development/$export?_type=Patient")
        .header("X-Request-ID", "<script>")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 202);
    let echoed = response.headers()["X-Request-ID"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(echoed).is_ok(), "{echoed}");
}
