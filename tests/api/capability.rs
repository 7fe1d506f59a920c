//! `…/metadata`: what a destination supports, as partners are told to check first.

use crate::helpers::*;
use serde_json::Value;

fn supported(statement: &Value, what: &str) -> Vec<String> {
    statement["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["url"].as_str().unwrap().ends_with(what))
        .map(|e| {
            e["valueString"]
                .as_str()
                .or(e["valueCode"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn each_destination_publishes_the_parameters_its_profile_and_config_allow() {
    let app = TestApp::spawn().await;

    let oracle = json_body(
        app.get(app.url("/fhir/R4/oracle/Production/metadata"))
            .await,
    )
    .await;
    let narrow = json_body(
        app.get(app.url("/fhir/R4/narrow-oracle/Development/metadata"))
            .await,
    )
    .await;
    let spec = json_body(
        app.get(app.url("/fhir/R4/spec-ehr/Development/metadata"))
            .await,
    )
    .await;

    assert_eq!(oracle["resourceType"], "CapabilityStatement");
    assert_eq!(
        supported(&oracle, "supported-parameter"),
        ["_type", "_outputFormat", "includeAssociatedData"]
    );
    assert_eq!(supported(&narrow, "supported-parameter"), ["_type"]);
    assert_eq!(supported(&spec, "supported-parameter").len(), 10);
    assert!(
        spec["rest"][0]["operation"].is_array(),
        "system export is listed for bulk-data"
    );
    assert!(
        oracle["rest"][0].get("operation").is_none(),
        "no system export for Oracle Health"
    );
    let mut redacted = oracle.clone();
    redacted["date"] = Value::String("[now]".into());
    insta::assert_json_snapshot!("oracle_capability_statement", redacted);
}

#[tokio::test]
async fn metadata_of_an_unknown_destination_is_404() {
    let app = TestApp::spawn().await;

    let response = app.get(app.url("/fhir/R4/nope/Production/metadata")).await;

    assert_eq!(response.status(), 404);
}
