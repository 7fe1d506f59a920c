//! The admin API's key and calls.

use super::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn sha(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

pub const ADMIN_KEY: &str = "admin-key-for-tests-4c1d";

/// TOML giving the gateway an admin key.
pub fn admin_toml() -> String {
    format!("\n[admin]\napi_key_sha256 = \"{}\"\n", sha(ADMIN_KEY))
}

/// TOML giving the gateway an admin key and one partner source (`SOURCE`) with the API key `key`.
pub fn admin_and_partner_toml(key: &str) -> String {
    format!(
        "{}\n[[sources]]\nid = \"{SOURCE}\"\nname = \"Partner\"\napi_key_sha256 = \"{}\"\ndestinations = [\"spec-ehr\"]\n",
        admin_toml(),
        sha(key)
    )
}

/// A message log record of a partner's kick-off to spec-ehr at `time`, with fresh ids.
pub fn request_record(time: chrono::DateTime<chrono::Utc>) -> fhirgate::store::LogRecord {
    fhirgate::store::LogRecord {
        kind: fhirgate::store::RecordKind::Request,
        log_id: uuid::Uuid::new_v4(),
        attempt_id: uuid::Uuid::new_v4(),
        time,
        source: None,
        destination: Some("spec-ehr".into()),
        environment: Some("Development".into()),
        event_type: Some("group-export".into()),
        method: Some("POST".into()),
        route: "/fhir/R4/{slug}/{env}/Group/{group_id}/$export".into(),
        gateway_status: Some(202),
        upstream_status: Some(202),
        error_code: None,
        duration_ms: 1.0,
        job_id: None,
        upstream_request_id: None,
        seq: 0,
    }
}

pub async fn admin_get(app: &TestApp, path_and_query: &str) -> (u16, Value) {
    let r = app
        .client
        .get(app.url(path_and_query))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}
