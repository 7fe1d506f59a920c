//! Each vendor profile's rules: unsupported parameters refused, or dropped under lenient handling.

use crate::helpers::*;
use serde_json::{Value, json};

fn oracle_route() -> String {
    group_route("oracle", "Production", "example-group-id")
}

fn envelope(fields: Value) -> Value {
    let mut e = json!({
        "Meta": {"DataModel": "FHIR Bulk Data Access", "EventType": "group-export",
                 "Logs": [{"ID": uuid::Uuid::new_v4().to_string(), "AttemptID": null}]},
        "id": "example-group-id"
    });
    for (k, v) in fields.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

async fn post_lenient(app: &TestApp, route: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(route))
        .header("Prefer", "handling=lenient")
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn oracle_health_refuses_since_naming_it_and_the_ehr_is_not_called() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 0).await;

    let response = app.post_envelope(&oracle_route(), &seed()).await;

    assert_eq!(response.status(), 400);
    let outcome = json_body(response).await;
    assert_eq!(codes(&outcome), ["not-supported"]);
    assert_eq!(expressions(&outcome), ["_since"]);
    insta::assert_json_snapshot!("oracle_refuses_since", outcome);
}

#[tokio::test]
async fn under_lenient_handling_oracle_health_gets_the_kickoff_without_since_and_the_partner_is_told()
 {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;

    let response = post_lenient(&app, &oracle_route(), &seed()).await;

    assert_eq!(response.status(), 202);
    let body = json_body(response).await;
    assert_eq!(body["droppedParameters"], json!(["_since"]));
    insta::assert_json_snapshot!("oracle_lenient_response", redact_envelope(body));
    let sent = &app.upstream_kickoffs().await[0];
    assert_eq!(
        sent.url.path(),
        "/r4/ec2458f2-1e24-41c8-b71b-0e701af7583d/Group/example-group-id/$export"
    );
    assert_eq!(
        sent.url.query(),
        Some("_outputFormat=application/fhir%2Bndjson&_type=Patient,Encounter,Observation"),
        "a + in a query value is percent-encoded, or servers read it as a space"
    );
    assert_eq!(sent.headers["prefer"], "respond-async, handling=lenient");
    assert_eq!(
        sent.headers["authorization"],
        format!("Bearer {UPSTREAM_TOKEN}").as_str()
    );
}

#[tokio::test]
async fn netsmart_does_not_receive_handling_lenient_because_it_does_not_document_it() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;
    let body = envelope(json!({"_type": "Patient", "_elements": "id"}));

    let response = post_lenient(
        &app,
        &group_route("netsmart", "Staging", "example-group-id"),
        &body,
    )
    .await;

    assert_eq!(response.status(), 202);
    let sent = &app.upstream_kickoffs().await[0];
    assert_eq!(
        sent.url.path(),
        "/uscore/v1/bulk-data/Group/example-group-id/$export"
    );
    assert_eq!(sent.url.query(), Some("_type=Patient"));
    assert_eq!(sent.headers["prefer"], "respond-async");
}

#[tokio::test]
async fn vendors_without_patient_or_system_export_refuse_them() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 0).await;

    let response = app
        .post_envelope(
            "/fhir/R4/oracle/Production/$export",
            &fixture("envelopes/system-export/valid/minimal.json"),
        )
        .await;

    assert_eq!(response.status(), 400);
    assert_eq!(codes(&json_body(response).await), ["not-supported"]);
}

#[tokio::test]
async fn oracle_health_exports_reference_types_only_beside_a_clinical_type() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 0).await;

    let response = app
        .post_envelope(
            &oracle_route(),
            &envelope(json!({"_type": "Practitioner,Provenance"})),
        )
        .await;

    assert_eq!(response.status(), 400);
    let outcome = json_body(response).await;
    assert_eq!(expressions(&outcome), ["_type"]);
    insta::assert_json_snapshot!("oracle_reference_types_alone", outcome);
}

#[tokio::test]
async fn oracle_health_needs_provenance_in_type_for_include_associated_data() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 0).await;

    let response = app
        .post_envelope(
            &oracle_route(),
            &envelope(json!({"_type": "Patient,Condition", "includeAssociatedData": "LatestProvenanceResources"})),
        )
        .await;

    assert_eq!(response.status(), 400);
    assert_eq!(
        expressions(&json_body(response).await),
        ["includeAssociatedData"]
    );
}

#[tokio::test]
async fn oracle_health_refuses_types_outside_its_list_and_custom_associated_data() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 0).await;

    let response = app
        .post_envelope(
            &oracle_route(),
            &envelope(json!({"_type": "Patient,Medication,Provenance", "includeAssociatedData": "_custom"})),
        )
        .await;

    assert_eq!(response.status(), 400);
    let mut named = expressions(&json_body(response).await);
    named.sort();
    assert_eq!(named, ["_type", "includeAssociatedData"]);
}

#[tokio::test]
async fn oracle_health_accepts_its_documented_combination() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 1).await;

    let response = app
        .post_envelope(
            &oracle_route(),
            &fixture("envelopes/group-export/valid/oracle-health-types-with-provenance.json"),
        )
        .await;

    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn a_tenant_config_can_narrow_the_profile_parameter_list() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 0).await;

    let response = app
        .post_envelope(
            &group_route("narrow-oracle", "Development", "example-group-id"),
            &envelope(json!({"_type": "Patient", "_outputFormat": "ndjson"})),
        )
        .await;

    assert_eq!(response.status(), 400);
    assert_eq!(expressions(&json_body(response).await), ["_outputFormat"]);
}
