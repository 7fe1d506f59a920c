//! Redox-style source auth: a signed client assertion at `POST /auth/token` buys a five-minute access
//! token. Every way an assertion can be wrong is a 401 that names the reason and calls no EHR.

use crate::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p384::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{Value, json};

async fn partner() -> Partner {
    partner_with("").await
}

async fn exchange(p: &Partner, assertion: &str) -> reqwest::Response {
    p.app
        .client
        .post(p.app.url("/auth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
            ("scope", "system/*.read"),
        ])
        .send()
        .await
        .unwrap()
}

async fn refused_because(p: &Partner, assertion: &str, reason: &str) {
    let response = exchange(p, assertion).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["Cache-Control"], "no-store");
    let text = response.text().await.unwrap();
    assert!(!text.contains(assertion), "the assertion is not echoed");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"], "invalid_client");
    let said = error["error_description"].as_str().unwrap();
    assert!(said.contains(reason), "{said}");
}

#[tokio::test]
async fn a_valid_assertion_buys_a_five_minute_token_that_opens_the_partner_routes() {
    let p = partner().await;
    p.app.upstream_accepts_kickoffs().await;

    let response = exchange(&p, &sign(&p, "partner-key-1", &claims(240))).await;
    assert_eq!(response.status(), 200);
    let body = json_body(response).await;
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 300);
    let token = body["access_token"].as_str().unwrap();

    let kick = p
        .app
        .post_envelope_as(token, &spec_group_route(), &seed())
        .await;
    let without = p.app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(kick.status(), 202);
    assert_eq!(without.status(), 401);
}

#[tokio::test]
async fn alg_none_is_refused() {
    let p = partner().await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"partner-key-1"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims(240).to_string());
    refused_because(&p, &format!("{header}.{body}."), "RS384 or ES384").await;
}

#[tokio::test]
async fn hs384_signed_with_the_public_key_is_refused() {
    let p = partner().await;
    let mut header = Header::new(Algorithm::HS384);
    header.kid = Some("partner-key-1".into());
    let forged = jsonwebtoken::encode(
        &header,
        &claims(240),
        &EncodingKey::from_secret(p.public_pem.as_bytes()),
    )
    .unwrap();
    refused_because(&p, &forged, "RS384 or ES384").await;
}

#[tokio::test]
async fn an_expired_assertion_is_refused() {
    let p = partner().await;
    refused_because(&p, &sign(&p, "partner-key-1", &claims(-600)), "expired").await;
}

#[tokio::test]
async fn an_assertion_valid_for_more_than_five_minutes_or_dated_ahead_is_refused() {
    let p = partner().await;
    refused_because(
        &p,
        &sign(&p, "partner-key-1", &claims(3600)),
        "five minutes",
    )
    .await;
    let mut future = claims(240);
    future["iat"] = json!(chrono::Utc::now().timestamp() + 600);
    refused_because(&p, &sign(&p, "partner-key-1", &future), "future").await;
}

#[tokio::test]
async fn a_replayed_assertion_is_refused() {
    let p = partner().await;
    let assertion = sign(&p, "partner-key-1", &claims(240));

    assert_eq!(exchange(&p, &assertion).await.status(), 200);
    refused_because(&p, &assertion, "used before").await;
}

#[tokio::test]
async fn an_unknown_kid_is_refused() {
    let p = partner().await;
    refused_because(&p, &sign(&p, "some-other-key", &claims(240)), "kid").await;
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    let p = partner().await;
    let other = p384::SecretKey::random(&mut rand::rngs::OsRng);
    let mut header = Header::new(Algorithm::ES384);
    header.kid = Some("partner-key-1".into());
    let pem = other.to_pkcs8_pem(LineEnding::LF).unwrap();
    let forged = jsonwebtoken::encode(
        &header,
        &claims(240),
        &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    refused_because(&p, &forged, "signature").await;
}

#[tokio::test]
async fn a_wrong_audience_is_refused() {
    let p = partner().await;
    let mut c = claims(240);
    c["aud"] = json!("https://elsewhere.example/token");
    refused_because(&p, &sign(&p, "partner-key-1", &c), "aud").await;
}

#[tokio::test]
async fn standard_clients_find_the_token_endpoint_under_each_fhir_base() {
    let p = partner().await;

    let response = p
        .app
        .client
        .get(
            p.app
                .url("/fhir/R4/spec-ehr/Development/.well-known/smart-configuration"),
        )
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let doc = json_body(response).await;
    assert_eq!(doc["token_endpoint"], token_url());
    assert_eq!(doc["grant_types_supported"], json!(["client_credentials"]));
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        json!(["private_key_jwt"])
    );
    assert_eq!(
        doc["token_endpoint_auth_signing_alg_values_supported"],
        json!(["RS384", "ES384"])
    );
}

#[tokio::test]
async fn keys_published_at_a_jwks_url_are_fetched_and_used() {
    let secret = p384::SecretKey::random(&mut rand::rngs::OsRng);
    let keys_host = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/jwks.json"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(json!({"keys": [jwk(&secret, "published-1")]})),
        )
        .expect(1)
        .mount(&keys_host)
        .await;
    let app = TestApp::spawn_with(&format!(
        "\n[[sources]]\nid = \"{SOURCE}\"\nname = \"Partner publishing keys\"\njwks_url = \"{}/jwks.json\"\ndestinations = [\"spec-ehr\"]\n",
        keys_host.uri()
    ))
    .await;
    let p = Partner {
        app,
        private_pem: secret.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: String::new(),
        _jwks: tempfile::NamedTempFile::new().unwrap(),
    };

    let first = exchange(&p, &sign(&p, "published-1", &claims(240))).await;
    let second = exchange(&p, &sign(&p, "published-1", &claims(240))).await;

    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200),
        "the second used the cached set"
    );
}

#[tokio::test]
async fn an_assertion_replayed_at_another_replica_is_refused_too() {
    let p = partner().await;
    let other = Partner {
        app: p.app.replica().await,
        private_pem: p.private_pem.clone(),
        public_pem: p.public_pem.clone(),
        _jwks: tempfile::NamedTempFile::new().unwrap(),
    };
    let assertion = sign(&p, "partner-key-1", &claims(240));

    assert_eq!(exchange(&p, &assertion).await.status(), 200);
    refused_because(&other, &assertion, "used before").await;
}

/// A partner whose keys are to be found at `keys_host`'s `/jwks.json` (whatever that answers), on a
/// gateway with `auth` TOML.
async fn partner_at(
    keys_host: &wiremock::MockServer,
    secret: &p384::SecretKey,
    auth: &str,
) -> Partner {
    let app = TestApp::spawn_with(&format!(
        "\n[[sources]]\nid = \"{SOURCE}\"\nname = \"Partner publishing keys\"\njwks_url = \"{}/jwks.json\"\ndestinations = [\"spec-ehr\"]\n\n[auth]\n{auth}\n",
        keys_host.uri()
    ))
    .await;
    Partner {
        app,
        private_pem: secret.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: String::new(),
        _jwks: tempfile::NamedTempFile::new().unwrap(),
    }
}

/// A partner whose key `published-1` is published at `keys_host`'s `/jwks.json`.
async fn publishing_partner(keys_host: &wiremock::MockServer, auth: &str) -> Partner {
    let secret = p384::SecretKey::random(&mut rand::rngs::OsRng);
    wiremock::Mock::given(wiremock::matchers::path("/jwks.json"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(json!({"keys": [jwk(&secret, "published-1")]})),
        )
        .mount(keys_host)
        .await;
    partner_at(keys_host, &secret, auth).await
}

#[tokio::test]
async fn two_hundred_requests_with_random_kids_fetch_the_jwks_url_once_per_window() {
    let keys_host = wiremock::MockServer::start().await;
    let p = publishing_partner(&keys_host, "token_rate_limit_per_minute = 0").await;

    let p = &p;
    let answers = futures_util::future::join_all((0..200).map(|_| {
        let assertion = sign(p, &uuid::Uuid::new_v4().to_string(), &claims(240));
        async move { exchange(p, &assertion).await.status().as_u16() }
    }))
    .await;
    let good = exchange(p, &sign(p, "published-1", &claims(240))).await;

    assert!(
        answers.iter().all(|s| *s == 401),
        "unknown kids are refused"
    );
    assert_eq!(good.status(), 200, "the known key still works");
    let fetches = keys_host.received_requests().await.unwrap().len();
    assert_eq!(
        fetches, 1,
        "one fetch in the refresh window, not one per kid"
    );
}

#[tokio::test]
async fn a_hanging_jwks_host_holds_a_token_request_no_longer_than_the_timeout() {
    let keys_host = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/jwks.json"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(json!({"keys": []}))
                .set_delay(std::time::Duration::from_secs(30)),
        )
        .mount(&keys_host)
        .await;
    let secret = p384::SecretKey::random(&mut rand::rngs::OsRng);
    let p = partner_at(&keys_host, &secret, "jwks_timeout_secs = 0.5").await;

    let started = std::time::Instant::now();
    let refused = exchange(&p, &sign(&p, "k", &claims(240))).await;
    let again = exchange(&p, &sign(&p, "k", &claims(240))).await;

    assert_eq!(refused.status(), 401);
    assert_eq!(json_body(refused).await["error"], "invalid_client");
    assert_eq!(
        again.status(),
        401,
        "the failure is remembered: no second wait"
    );
    // Far below the host's 30 s: the timeout (0.5 s) bounds the first, the cache the second.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(keys_host.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn too_many_token_requests_from_one_address_get_429_with_retry_after_in_oauths_format() {
    let keys_host = wiremock::MockServer::start().await;
    let p = publishing_partner(&keys_host, "token_rate_limit_per_minute = 3").await;

    for _ in 0..3 {
        assert_eq!(
            exchange(&p, &sign(&p, "published-1", &claims(240)))
                .await
                .status(),
            200
        );
    }
    let refused = exchange(&p, &sign(&p, "published-1", &claims(240))).await;

    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["Retry-After"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&wait), "{wait}");
    assert_eq!(refused.headers()["Cache-Control"], "no-store");
    let body = json_body(refused).await;
    assert_eq!(body["error"], "slow_down");
}

#[tokio::test]
async fn a_gateway_that_wants_credentials_says_requires_access_token_true_and_means_it() {
    let p = partner().await;
    p.app.upstream_accepts_kickoffs().await;
    upstream_completes(&p.app).await;
    let issued = json_body(exchange(&p, &sign(&p, "partner-key-1", &claims(240))).await).await;
    let token = issued["access_token"].as_str().unwrap();
    let kick = p
        .app
        .post_envelope_as(token, &spec_group_route(), &seed())
        .await;
    let location = kick.headers()["Content-Location"]
        .to_str()
        .unwrap()
        .to_owned();

    let manifest = json_body(p.app.get_as(token, local(&p.app, &location)).await).await;
    let file = local(&p.app, manifest["output"][0]["url"].as_str().unwrap());

    assert_eq!(manifest["requiresAccessToken"], true);
    assert_eq!(p.app.get(&file).await.status(), 401, "no token, no file");
}
