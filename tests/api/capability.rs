//! `…/metadata`: what a destination supports, as partners are told to check first.

use crate::helpers::*;
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

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

/// The types a client that reads `rest.resource[].type` would export.
fn listed_types(statement: &Value) -> Vec<String> {
    statement["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap().to_owned())
        .collect()
}

fn exports_on(statement: &Value, rtype: &str) -> bool {
    statement["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["type"] == rtype && r["operation"][0]["name"] == "export")
}

#[tokio::test]
async fn a_client_that_picks_types_from_the_capability_statement_finds_every_exportable_type() {
    let app = TestApp::spawn().await;

    let spec = json_body(
        app.get(app.url("/fhir/R4/spec-ehr/Development/metadata"))
            .await,
    )
    .await;
    let oracle = json_body(
        app.get(app.url("/fhir/R4/oracle/Production/metadata"))
            .await,
    )
    .await;

    // An EHR that has not said what it serves: every R4 type.
    let types = listed_types(&spec);
    assert_eq!(types.len(), fhirgate::domain::R4_RESOURCE_TYPES.len());
    for t in [
        "Patient",
        "Observation",
        "DocumentReference",
        "Binary",
        "Group",
    ] {
        assert!(types.iter().any(|x| x == t), "{t}");
    }
    assert!(exports_on(&spec, "Patient") && exports_on(&spec, "Group"));
    // Oracle Health: seed 003's list, with the export on Group only.
    let mut expected: Vec<String> = fhirgate::connectors::vendors::oracle_health::RESOURCE_TYPES
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
    expected.push("Group".into());
    expected.sort();
    assert_eq!(listed_types(&oracle), expected);
    assert!(exports_on(&oracle, "Group") && !exports_on(&oracle, "Patient"));
}

/// An EHR that declares Group and Patient export (no system level), four types, and in its Group
/// OperationDefinition the v2 parameters without `_until` and `includeAssociatedData`; it does not
/// serve the IG's patient-export definition it points at.
async fn ehr_declares_its_capabilities(app: &TestApp) {
    let up = app.upstream.uri();
    app.upstream_get(
        "/fhir/r4/metadata",
        ResponseTemplate::new(200).set_body_json(json!({
            "resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
            "fhirVersion": "4.0.1", "format": ["json"],
            "rest": [{"mode": "server",
                "operation": [{"name": "get-resource-counts", "definition": "OperationDefinition/-s-get-resource-counts"}],
                "resource": [
                    {"type": "Patient", "operation": [{"name": "export",
                        "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"}]},
                    {"type": "Group", "operation": [{"name": "export",
                        "definition": format!("{up}/fhir/r4/OperationDefinition/GroupExport")}]},
                    {"type": "Observation"},
                    {"type": "DocumentReference"}
                ]}]
        })),
    )
    .await;
    let param =
        |name: &str| json!({"name": name, "use": "in", "min": 0, "max": "1", "type": "string"});
    let params: Vec<Value> = [
        "_outputFormat",
        "_since",
        "_type",
        "_elements",
        "patient",
        "_typeFilter",
    ]
    .map(param)
    .to_vec();
    app.upstream_get(
        "/fhir/r4/OperationDefinition/GroupExport",
        ResponseTemplate::new(200).set_body_json(json!({
            "resourceType": "OperationDefinition", "code": "export",
            "parameter": params
        })),
    )
    .await;
}

/// Waits until `/readyz` says discovery found something for spec-ehr.
async fn discovered(app: &TestApp) -> Value {
    for _ in 0..60 {
        let ready = json_body(app.get(app.url("/readyz")).await).await;
        let row = ready["discovery"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["destination"] == "spec-ehr")
            .cloned()
            .unwrap();
        if row["status"] == "ok" {
            return row;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("discovery never succeeded");
}

fn rediscovered_every_second(settings: &mut fhirgate::config::Settings) {
    let spec = settings
        .destinations
        .iter_mut()
        .find(|d| d.slug.as_str() == "spec-ehr")
        .unwrap();
    for env in spec.environments.values_mut() {
        env.discover_interval_secs = 1;
    }
}

#[tokio::test]
async fn discovery_narrows_levels_parameters_and_types_to_what_the_ehr_declares() {
    let app = TestApp::spawn_configured("", rediscovered_every_second).await;
    let before = json_body(
        app.get(app.url("/fhir/R4/spec-ehr/Development/metadata"))
            .await,
    )
    .await;
    assert_eq!(
        supported(&before, "supported-parameter").len(),
        10,
        "until the EHR is read, the profile table stands"
    );
    ehr_declares_its_capabilities(&app).await;

    let row = discovered(&app).await;
    let levels = row["discovered"]["exportLevels"].as_array().unwrap().len();
    assert_eq!(levels, 2, "{row}");
    assert_eq!(row["discovered"]["resourceTypes"], 4);
    let after = json_body(
        app.get(app.url("/fhir/R4/spec-ehr/Development/metadata"))
            .await,
    )
    .await;
    let params = supported(&after, "supported-parameter");
    for gone in ["_until", "includeAssociatedData"] {
        assert!(!params.iter().any(|p| p == gone), "{gone} is not declared");
    }
    for kept in [
        "_since",
        "_type",
        "patient",
        "allowPartialManifests",
        "organizeOutputBy",
    ] {
        assert!(params.iter().any(|p| p == kept), "{kept}");
    }
    assert_eq!(
        listed_types(&after),
        ["DocumentReference", "Group", "Observation", "Patient"]
    );
    assert!(
        after["rest"][0].get("operation").is_none(),
        "no system export declared"
    );
    assert!(exports_on(&after, "Patient") && exports_on(&after, "Group"));

    // What the EHR does not declare is refused, naming it; under lenient handling it is dropped.
    app.upstream_accepts_kickoffs().await;
    let kickoff = |prefer: &'static str| {
        app.client
            .get(app.url("/fhir/R4/spec-ehr/Development/Group/g/$export?_type=Patient&_until=2025-01-01T00:00:00Z"))
            .header("Accept", "application/fhir+json")
            .header("Prefer", prefer)
            .send()
    };
    let refused = kickoff("respond-async").await.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(expressions(&json_body(refused).await), ["_until"]);
    let lenient = kickoff("respond-async, handling=lenient").await.unwrap();
    assert_eq!(lenient.status(), 202);
    let sent = &app.upstream_kickoffs().await[0];
    assert_eq!(sent.url.query(), Some("_type=Patient"));
    let system = app
        .client
        .get(app.url("/fhir/R4/spec-ehr/Development/$export"))
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_ne!(system.status(), 202, "system export is not declared");
}

#[tokio::test]
async fn an_unreachable_ehr_never_blocks_the_boot_and_readyz_says_discovery_failed() {
    let app = TestApp::spawn().await;
    let ready = app.get(app.url("/readyz")).await;
    assert_eq!(ready.status(), 200);
    let ready = json_body(ready).await;
    let nowhere = ready["discovery"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["destination"] == "nowhere")
        .cloned()
        .unwrap();
    assert_eq!(nowhere["status"], "failed");
    assert!(nowhere["error"].as_str().unwrap().contains("metadata"));
    assert!(
        !ready.to_string().contains("127.0.0.1"),
        "no EHR address in readiness"
    );
    let oracle = ready["discovery"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["destination"] == "oracle");
    assert!(!oracle, "discover defaults to false outside bulk-data");
}
