//! The built-in sandbox EHR, end to end through the gateway: kick-off, poll, download, delete.

use crate::helpers::*;
use serde_json::Value;
use std::time::Duration;

const SWITCHES: &str = "[sandbox]\nprogress_secs = 0.3\nretry_after_secs = 0\nredirect_files = true\nfile_host = \"localhost\"\none_export_per_client = true\n";

fn local(app: &TestApp, public: &str) -> String {
    app.url(public.strip_prefix(PUBLIC_URL).unwrap())
}

#[tokio::test]
async fn the_whole_flow_runs_against_the_sandbox_with_its_redirects_to_a_file_host() {
    let app = TestApp::spawn_sandbox(SWITCHES).await;
    let envelope = fixture("envelopes/group-export/valid/sandbox-demo-group.json");

    let kickoff = app
        .post_envelope(
            "/fhir/R4/sandbox/Development/Group/demo-group/$export",
            &envelope,
        )
        .await;
    assert_eq!(kickoff.status(), 202);
    let status_url = local(
        &app,
        kickoff.headers()["Content-Location"].to_str().unwrap(),
    );

    let first = app.get(&status_url).await;
    assert_eq!(first.status(), 202);
    assert!(
        first.headers()["X-Progress"]
            .to_str()
            .unwrap()
            .contains('%')
    );

    let mut manifest = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = app.get(&status_url).await;
        if r.status() == 200 {
            manifest = json_body(r).await;
            break;
        }
    }
    let output = manifest["output"]
        .as_array()
        .expect("a manifest with output")
        .clone();
    let types: Vec<&str> = output.iter().map(|o| o["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["Patient", "Observation", "Condition"],
        "_type honoured"
    );

    for file in &output {
        let response = app.get(local(&app, file["url"].as_str().unwrap())).await;
        assert_eq!(
            response.status(),
            200,
            "through the 307 to the file host, without Authorization"
        );
        let body = response.text().await.unwrap();
        assert_eq!(body.lines().count() as u64, file["count"].as_u64().unwrap());
        for line in body.lines() {
            let resource: Value = serde_json::from_str(line).unwrap();
            assert_eq!(resource["resourceType"], file["type"]);
            assert!(
                resource["meta"]["lastUpdated"].as_str().unwrap() > "2024-01-01T00:00:00Z",
                "_since honoured"
            );
        }
    }

    let deleted = app.client.delete(&status_url).send().await.unwrap();
    assert_eq!(deleted.status(), 202);
    assert_eq!(app.get(&status_url).await.status(), 404);
}

#[tokio::test]
async fn the_sandbox_refuses_a_second_export_of_a_client_while_the_first_runs() {
    let app = TestApp::spawn_sandbox(SWITCHES).await;
    let mut envelope = fixture("envelopes/group-export/valid/sandbox-demo-group.json");

    let first = app
        .post_envelope(
            "/fhir/R4/sandbox/Development/Group/demo-group/$export",
            &envelope,
        )
        .await;
    envelope["_type"] = Value::String("Patient".into());
    let second = app
        .post_envelope(
            "/fhir/R4/sandbox/Development/Group/demo-group/$export",
            &envelope,
        )
        .await;

    assert_eq!(first.status(), 202);
    assert_eq!(second.status(), 429);
    assert!(second.headers().contains_key("Retry-After"));
}

#[tokio::test]
async fn the_sandbox_says_404_for_a_group_it_does_not_have() {
    let app = TestApp::spawn_sandbox(SWITCHES).await;

    let response = app
        .post_envelope(
            "/fhir/R4/sandbox/Development/Group/example-group-id/$export",
            &seed(),
        )
        .await;

    assert_eq!(response.status(), 404);
    assert!(
        json_body(response).await["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .starts_with("The EHR answered HTTP 404")
    );
}
