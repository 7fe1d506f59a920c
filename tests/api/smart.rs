//! SMART Backend Services to the EHR: the signed assertion, token caching under concurrency,
//! discovery, refresh on 401, and a refusal that tells the partner without leaking credentials.

use crate::helpers::*;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use p384::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{Value, json};
use std::collections::HashMap;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

struct Keys {
    private_pem: String,
    public_pem: String,
    alg: Algorithm,
}

fn rsa_keys() -> Keys {
    use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
    let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    Keys {
        private_pem: private
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
            .to_string(),
        public_pem: private
            .to_public_key()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap(),
        alg: Algorithm::RS384,
    }
}

fn ec_keys() -> Keys {
    let secret = p384::SecretKey::random(&mut rand::rngs::OsRng);
    Keys {
        private_pem: secret.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
        alg: Algorithm::ES384,
    }
}

/// A gateway with destination `smart-ehr` authenticating by SMART Backend Services.
async fn smart_app(keys: &Keys, discover: bool) -> (TestApp, tempfile::NamedTempFile) {
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), &keys.private_pem).unwrap();
    let alg = if keys.alg == Algorithm::RS384 {
        "RS384"
    } else {
        "ES384"
    };
    let token_url = if discover {
        String::new()
    } else {
        ", token_url = \"@UPSTREAM@/auth/token\"".to_owned()
    };
    let app = TestApp::spawn_with(&format!(
        r#"
[[destinations]]
slug = "smart-ehr"
name = "EHR with SMART Backend Services"
vendor = "bulk-data"
[destinations.environments.Production]
base_url = "@UPSTREAM@/smart/r4"
allow_private_addresses = true
auth = {{ type = "smart-backend-services", client_id = "fhirgate-client", private_key_file = "{}", kid = "key-1", alg = "{alg}", scope = "system/Patient.read system/Observation.read"{token_url} }}
"#,
        key_file.path().display()
    ))
    .await;
    (app, key_file)
}

fn route() -> String {
    group_route("smart-ehr", "Production", "example-group-id")
}

async fn token_endpoint_gives(app: &TestApp, token: &str, times: Option<u64>) {
    let mut mock = Mock::given(method("POST"))
        .and(path("/auth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": token, "expires_in": 300, "token_type": "bearer"}),
        ));
    if let Some(n) = times {
        mock = mock.up_to_n_times(n);
    }
    mock.mount(&app.upstream).await;
}

async fn kickoff_needs(app: &TestApp, token: &str) {
    Mock::given(method("GET"))
        .and(path("/smart/r4/Group/example-group-id/$export"))
        .and(header("Authorization", format!("Bearer {token}").as_str()))
        .respond_with(ResponseTemplate::new(202).insert_header(
            "Content-Location",
            format!("{}/smart/r4/jobs/1", app.upstream.uri()),
        ))
        .mount(&app.upstream)
        .await;
}

async fn token_requests(app: &TestApp) -> Vec<HashMap<String, String>> {
    app.upstream_requests()
        .await
        .into_iter()
        .filter(|r| r.url.path() == "/auth/token")
        .map(|r| url::form_urlencoded::parse(&r.body).into_owned().collect())
        .collect()
}

fn check_assertion(keys: &Keys, form: &HashMap<String, String>, aud: &str) -> Value {
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(form["scope"], "system/Patient.read system/Observation.read");
    let assertion = &form["client_assertion"];
    let header = jsonwebtoken::decode_header(assertion).unwrap();
    assert_eq!(header.alg, keys.alg);
    assert_eq!(header.kid.as_deref(), Some("key-1"));
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let key = match keys.alg {
        Algorithm::RS384 => DecodingKey::from_rsa_pem(keys.public_pem.as_bytes()).unwrap(),
        _ => DecodingKey::from_ec_pem(keys.public_pem.as_bytes()).unwrap(),
    };
    let mut validation = Validation::new(keys.alg);
    validation.set_audience(&[aud]);
    validation.set_issuer(&["fhirgate-client"]);
    validation.sub = Some("fhirgate-client".into());
    let claims: Value = jsonwebtoken::decode(assertion, &key, &validation)
        .expect("signature and claims verify")
        .claims;
    let (exp, iat) = (
        claims["exp"].as_i64().unwrap(),
        claims["iat"].as_i64().unwrap(),
    );
    assert!(
        exp - iat <= 300 && exp > chrono::Utc::now().timestamp(),
        "exp at most five minutes ahead"
    );
    assert!(!claims["jti"].as_str().unwrap().is_empty());
    claims
}

#[tokio::test]
async fn an_rs384_assertion_is_signed_with_the_destination_key_and_buys_the_upstream_token() {
    let keys = rsa_keys();
    let (app, _key) = smart_app(&keys, false).await;
    token_endpoint_gives(&app, "canary-access-token-rs", None).await;
    kickoff_needs(&app, "canary-access-token-rs").await;

    let response = app.post_envelope(&route(), &seed()).await;

    assert_eq!(response.status(), 202);
    let forms = token_requests(&app).await;
    check_assertion(
        &keys,
        &forms[0],
        &format!("{}/auth/token", app.upstream.uri()),
    );
}

#[tokio::test]
async fn an_es384_assertion_verifies_with_the_public_key() {
    let keys = ec_keys();
    let (app, _key) = smart_app(&keys, false).await;
    token_endpoint_gives(&app, "canary-access-token-ec", None).await;
    kickoff_needs(&app, "canary-access-token-ec").await;

    let response = app.post_envelope(&route(), &seed()).await;

    assert_eq!(response.status(), 202);
    check_assertion(
        &keys,
        &token_requests(&app).await[0],
        &format!("{}/auth/token", app.upstream.uri()),
    );
}

#[tokio::test]
async fn concurrent_kickoffs_share_one_token_request() {
    let keys = ec_keys();
    let (app, _key) = smart_app(&keys, false).await;
    token_endpoint_gives(&app, "shared-token", None).await;
    kickoff_needs(&app, "shared-token").await;
    let envelopes: Vec<Value> = (0..8)
        .map(|i| json!({"Meta": {"DataModel": "FHIR Bulk Data Access", "EventType": "group-export"}, "id": "example-group-id", "_since": format!("2024-01-0{}T00:00:00Z", i + 1)}))
        .collect();

    let path = route();
    let answers =
        futures_util::future::join_all(envelopes.iter().map(|e| app.post_envelope(&path, e))).await;

    assert!(answers.iter().all(|r| r.status() == 202));
    assert_eq!(
        token_requests(&app).await.len(),
        1,
        "one token, cached and shared"
    );
    let metrics = app.state().metrics.render().unwrap();
    let fetches: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("fhirgate_upstream_token_fetches_total{"))
        .collect();
    assert_eq!(fetches.len(), 1, "{metrics}");
    assert!(
        fetches[0].contains(r#"outcome="ok"}"#) && fetches[0].ends_with(" 1"),
        "{}",
        fetches[0]
    );
}

#[tokio::test]
async fn the_token_endpoint_is_discovered_from_smart_configuration() {
    let keys = ec_keys();
    let (app, _key) = smart_app(&keys, true).await;
    Mock::given(method("GET"))
        .and(path("/smart/r4/.well-known/smart-configuration"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"token_endpoint": format!("{}/auth/token", app.upstream.uri())}),
            ),
        )
        .expect(1)
        .mount(&app.upstream)
        .await;
    token_endpoint_gives(&app, "discovered-token", None).await;
    kickoff_needs(&app, "discovered-token").await;

    let response = app.post_envelope(&route(), &seed()).await;

    assert_eq!(response.status(), 202);
    check_assertion(
        &keys,
        &token_requests(&app).await[0],
        &format!("{}/auth/token", app.upstream.uri()),
    );
}

#[tokio::test]
async fn a_401_from_the_ehr_fetches_a_new_token_once_and_retries() {
    let keys = ec_keys();
    let (app, _key) = smart_app(&keys, false).await;
    token_endpoint_gives(&app, "stale-token", Some(1)).await;
    token_endpoint_gives(&app, "fresh-token", None).await;
    Mock::given(method("GET"))
        .and(path("/smart/r4/Group/example-group-id/$export"))
        .and(header("Authorization", "Bearer stale-token"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&app.upstream)
        .await;
    kickoff_needs(&app, "fresh-token").await;

    let response = app.post_envelope(&route(), &seed()).await;

    assert_eq!(response.status(), 202);
    assert_eq!(token_requests(&app).await.len(), 2);
}

#[tokio::test]
async fn a_token_endpoint_refusal_is_a_502_that_names_the_credentials_but_never_shows_them() {
    let keys = rsa_keys();
    let (app, _key) = smart_app(&keys, false).await;
    Mock::given(method("POST"))
        .and(path("/auth/token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": "invalid_client"})))
        .mount(&app.upstream)
        .await;
    expect_kickoffs(&app, 0).await;

    let response = app.post_envelope(&route(), &seed()).await;

    assert_eq!(response.status(), 502);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("eyJ")
            && !text.contains("PRIVATE KEY")
            && !text.contains("client_assertion")
    );
    let outcome: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(codes(&outcome), ["security"]);
    insta::assert_json_snapshot!("token_endpoint_refused", outcome);
    let metrics = app.state().metrics.render().unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("fhirgate_upstream_token_fetches_total{")
                && l.contains(r#"outcome="failed""#)
                && l.ends_with(" 1")),
        "{metrics}"
    );
}
