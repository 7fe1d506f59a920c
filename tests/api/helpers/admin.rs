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
