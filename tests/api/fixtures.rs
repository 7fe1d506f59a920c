//! Every fixture through the real gateway: valid ones are accepted, invalid ones refused with an
//! OperationOutcome naming the field, and every answer holds to its schema and its snapshot.

use crate::helpers::*;
use crate::schemas::{EVENTS, fixture_files, with_validator};
use serde_json::Value;

/// The route for a fixture: valid Group fixtures go to the group they name; invalid ones always to
/// `example-group-id`, so a fixture whose `id` differs from the path shows that rule.
fn route(event: &str, kind: &str, fixture: &Value) -> String {
    match event {
        "group-export" if kind == "valid" => format!(
            "/fhir/R4/spec-ehr/Development/Group/{}/$export",
            fixture["id"].as_str().unwrap_or("example-group-id")
        ),
        "group-export" => "/fhir/R4/spec-ehr/Development/Group/example-group-id/$export".to_owned(),
        "patient-export" => "/fhir/R4/spec-ehr/Development/Patient/$export".to_owned(),
        _ => "/fhir/R4/spec-ehr/Development/$export".to_owned(),
    }
}

#[tokio::test]
async fn every_fixture_gets_the_answer_its_folder_promises() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;
    let mut valid_sent = 0;
    for event in EVENTS {
        for (kind, name, path) in fixture_files(event) {
            let body = std::fs::read(&path).unwrap();
            let fixture: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let response = app
                .post_raw(&route(event, &kind, &fixture), "application/json", body)
                .await;
            let status = response.status().as_u16();
            let answer: Value = json_body(response).await;
            let snapshot = format!("fixture__{event}__{kind}__{name}");
            if kind == "valid" {
                assert_eq!(status, 202, "{event}/{name}: {answer}");
                with_validator("system-export-response.schema.json", |v| {
                    assert!(
                        v.is_valid(&answer),
                        "{event}/{name}: response breaks its schema: {answer}"
                    )
                });
                valid_sent += 1;
                insta::assert_json_snapshot!(snapshot, redact_envelope(answer));
            } else {
                assert_eq!(status, 400, "{event}/{name}: {answer}");
                with_validator("operation-outcome.schema.json", |v| {
                    assert!(
                        v.is_valid(&answer),
                        "{event}/{name}: outcome breaks its schema: {answer}"
                    )
                });
                if name != "body-not-an-object" {
                    assert!(
                        !expressions(&answer).is_empty(),
                        "{event}/{name} names no field: {answer}"
                    );
                }
                insta::assert_json_snapshot!(snapshot, answer);
            }
        }
    }
    assert_eq!(
        app.upstream_kickoffs().await.len(),
        valid_sent,
        "invalid fixtures never reach the EHR"
    );
}
