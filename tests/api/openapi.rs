//! The OpenAPI document: served, committed, in step with the routes.

use crate::helpers::*;
use serde_json::Value;

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one() {
    let app = TestApp::spawn().await;
    let served: Value = app
        .get(app.url("/openapi.json"))
        .await
        .json()
        .await
        .unwrap();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("schemas/openapi.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(served["openapi"], "3.1.0");
    assert!(
        served == committed,
        "schemas/openapi.json is out of date: run `cargo run -- openapi > schemas/openapi.json` and review the diff"
    );
}

#[tokio::test]
async fn every_documented_route_and_method_is_served() {
    let app = TestApp::spawn().await;
    let doc = fhirgate::api::openapi::document();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{destinationSlug}", "spec-ehr")
            .replace("{environmentFlag}", "Development")
            .replace("{groupId}", "g")
            .replace("{fileId}", "0")
            .replace("{jobId}", &uuid::Uuid::new_v4().to_string())
            .replace("{logId}", &uuid::Uuid::new_v4().to_string());
        for method in item.as_object().unwrap().keys() {
            let response = app
                .client
                .request(method.to_uppercase().parse().unwrap(), app.url(&concrete))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            assert_ne!(status, 405, "{method} {path}");
            assert!(
                !body.contains("No such route on this gateway"),
                "{method} {path} is documented but not served"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");
}
