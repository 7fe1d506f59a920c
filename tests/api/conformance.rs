//! The gateway's own surface as Bulk Data and SMART clients (and the conformance suite) expect it: OAuth
//! errors at the token endpoint, SMART v1/v2 system scopes granted and enforced, `jku`, public discovery,
//! `WWW-Authenticate`, and the FHIR-native `Accept`.

use crate::helpers::*;
use p384::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const PARTNER_KEY: &str = "canary-scoped-api-key-41ac";

/// A complete, valid token request for `p`, asking for `scope`.
fn form(p: &Partner, scope: &str) -> Vec<(String, String)> {
    vec![
        ("grant_type".into(), "client_credentials".into()),
        ("client_assertion_type".into(), JWT_BEARER.into()),
        (
            "client_assertion".into(),
            sign(p, "partner-key-1", &claims(240)),
        ),
        ("scope".into(), scope.into()),
    ]
}

fn without(mut form: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    form.retain(|(n, _)| n != name);
    form
}

fn with(mut form: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    for (n, v) in form.iter_mut() {
        if n == name {
            *v = value.to_owned();
        }
    }
    form
}

async fn post_token(p: &Partner, form: &[(String, String)]) -> reqwest::Response {
    p.app
        .client
        .post(p.app.url("/auth/token"))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// Asserts an RFC 6749 §5.2 error answer and returns its `error_description`.
async fn oauth_error(response: reqwest::Response, status: u16, error: &str) -> String {
    assert_eq!(response.status(), status, "for {error}");
    assert_eq!(response.headers()["Content-Type"], "application/json");
    assert_eq!(response.headers()["Cache-Control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    let description = body["error_description"].as_str().expect("a description");
    assert!(!description.is_empty());
    assert!(
        body.get("resourceType").is_none(),
        "not an OperationOutcome"
    );
    description.to_owned()
}

async fn granted(p: &Partner, scope: &str) -> String {
    let response = post_token(p, &form(p, scope)).await;
    assert_eq!(response.status(), 200, "{scope} should be granted");
    let body: Value = response.json().await.unwrap();
    body["scope"].as_str().unwrap().to_owned()
}

async fn token_for(p: &Partner, scope: &str) -> String {
    let response = post_token(p, &form(p, scope)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_token_request_error_is_an_oauth_error_of_the_rfc_kind() {
    let p = partner_with("").await;
    let ok = || form(&p, "system/*.read");

    let json_body = p
        .app
        .client
        .post(p.app.url("/auth/token"))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    oauth_error(json_body, 400, "invalid_request").await;
    for missing in [
        "grant_type",
        "client_assertion_type",
        "client_assertion",
        "scope",
    ] {
        let said = oauth_error(
            post_token(&p, &without(ok(), missing)).await,
            400,
            "invalid_request",
        )
        .await;
        assert!(said.contains(missing), "{said}");
    }
    let mut repeated = ok();
    repeated.push(("grant_type".into(), "client_credentials".into()));
    oauth_error(post_token(&p, &repeated).await, 400, "invalid_request").await;
    oauth_error(
        post_token(&p, &with(ok(), "grant_type", "password")).await,
        400,
        "unsupported_grant_type",
    )
    .await;
    oauth_error(
        post_token(
            &p,
            &with(ok(), "client_assertion_type", "invalid test value"),
        )
        .await,
        401,
        "invalid_client",
    )
    .await;
    oauth_error(
        post_token(&p, &with(ok(), "client_assertion", "invalid test value")).await,
        401,
        "invalid_client",
    )
    .await;
    oauth_error(
        post_token(&p, &with(ok(), "scope", "invalid test value")).await,
        400,
        "invalid_scope",
    )
    .await;
    // And a request that is right gets its token, without caching.
    let good = post_token(&p, &ok()).await;
    assert_eq!(good.status(), 200);
    assert_eq!(good.headers()["Cache-Control"], "no-store");
}

#[tokio::test]
async fn malformed_non_system_unknown_and_write_only_scopes_are_invalid_scope() {
    let p = partner_with("").await;

    for scope in [
        "",
        "undefined",
        "launch fhirUser",
        "patient/*.read",
        "user/Patient.rs",
        "system/Patient",
        "system/UnknownResource.read",
        "system/UnknownResource.r",
        "system/Patient.unknownAction",
        "system/Patient.xyz",
        "system/Patient.rs?category=laboratory",
        "system/Patient.write",
        "system/Patient.c",
        "system/Patient.cud",
        "system/Patient.u",
        "system/*.read launch",
    ] {
        let said = oauth_error(post_token(&p, &form(&p, scope)).await, 400, "invalid_scope").await;
        assert!(!said.is_empty(), "{scope:?}");
    }
}

#[tokio::test]
async fn v1_and_v2_read_scopes_are_granted_as_asked_and_never_with_write() {
    let p = partner_with("").await;

    assert_eq!(granted(&p, "system/*.read").await, "system/*.read");
    assert_eq!(granted(&p, "system/*.rs").await, "system/*.rs");
    assert_eq!(granted(&p, "system/*.*").await, "system/*.read");
    assert_eq!(granted(&p, "system/Patient.*").await, "system/Patient.read");
    assert_eq!(granted(&p, "system/*.cruds").await, "system/*.rs");
    assert_eq!(
        granted(&p, "system/Patient.cruds").await,
        "system/Patient.rs"
    );
    assert_eq!(
        granted(&p, "system/Patient.read system/Observation.rs").await,
        "system/Patient.read system/Observation.rs"
    );
}

#[tokio::test]
async fn the_grant_is_the_intersection_with_the_sources_scopes() {
    let p = partner_with(r#"scopes = ["system/Patient.read", "system/Observation.rs"]"#).await;

    assert_eq!(
        granted(&p, "system/*.read").await,
        "system/Patient.read system/Observation.read"
    );
    assert_eq!(
        granted(&p, "system/Patient.rs system/Encounter.rs").await,
        "system/Patient.rs"
    );
    let said = oauth_error(
        post_token(&p, &form(&p, "system/Encounter.read")).await,
        400,
        "invalid_scope",
    )
    .await;
    assert!(said.contains("system/Patient.read"), "{said}");
}

#[tokio::test]
async fn a_source_configured_with_scopes_that_read_nothing_is_refused_at_boot() {
    let text = format!(
        "{}\n[[sources]]\nid = \"{SOURCE}\"\nname = \"Writer\"\napi_key_sha256 = \"{}\"\nscopes = [\"system/Patient.cud\"]\n",
        test_config("http://127.0.0.1:9", std::path::Path::new("/tmp")),
        "0".repeat(64)
    );
    let err = fhirgate::config::Settings::from_toml(&text)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sources[0].scopes"), "{err}");
    let bad = text.replace("system/Patient.cud", "system/Bogus.read");
    let err = fhirgate::config::Settings::from_toml(&bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Bogus"), "{err}");
}

#[tokio::test]
async fn a_kickoff_whose_type_is_outside_the_tokens_scopes_is_403_naming_type_and_the_ehr_is_not_called()
 {
    let p = partner_with("").await;
    expect_kickoffs(&p.app, 0).await;
    let token = token_for(&p, "system/Patient.read system/Observation.rs").await;

    // The seed asks for Patient, Encounter and Observation.
    let response = p
        .app
        .post_envelope_as(&token, &spec_group_route(), &seed())
        .await;

    assert_eq!(response.status(), 403);
    let outcome = json_body(response).await;
    assert_eq!(codes(&outcome), ["forbidden"]);
    assert_eq!(expressions(&outcome), ["_type"]);
    let said = outcome["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        said.contains("Encounter") && !said.contains("Observation,"),
        "{said}"
    );
}

#[tokio::test]
async fn a_kickoff_without_type_is_narrowed_to_the_granted_types_and_the_partner_is_told() {
    let p = partner_with("").await;
    p.app.upstream_accepts_kickoffs().await;
    let token = token_for(&p, "system/Patient.read system/Observation.rs").await;
    let mut envelope = seed();
    envelope["_type"] = Value::Null;

    let response = p
        .app
        .post_envelope_as(&token, &spec_group_route(), &envelope)
        .await;

    assert_eq!(response.status(), 202);
    let body = json_body(response).await;
    assert_eq!(body["scopedType"], "Patient,Observation");
    insta::assert_json_snapshot!("kickoff_narrowed_to_scopes", redact_envelope(body));
    let kickoffs = p.app.upstream_kickoffs().await;
    assert_eq!(kickoffs.len(), 1);
    let sent: Vec<(String, String)> = kickoffs[0].url.query_pairs().into_owned().collect();
    assert!(
        sent.contains(&("_type".into(), "Patient,Observation".into())),
        "{sent:?}"
    );
}

#[tokio::test]
async fn a_native_kickoff_without_type_is_narrowed_with_a_warning() {
    let p = partner_with("").await;
    p.app.upstream_accepts_kickoffs().await;
    let token = token_for(&p, "system/Condition.rs").await;

    let response = p
        .app
        .client
        .get(p.app.url("/fhir/R4/spec-ehr/Development/Patient/$export"))
        .bearer_auth(&token)
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 202);
    let outcome = json_body(response).await;
    let warning = outcome["issue"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["severity"] == "warning")
        .expect("a warning");
    assert_eq!(warning["expression"], json!(["_type"]));
    assert!(
        warning["diagnostics"]
            .as_str()
            .unwrap()
            .contains("Condition")
    );
    let sent = p.app.upstream_kickoffs().await[0]
        .url
        .query()
        .unwrap_or("")
        .to_owned();
    assert!(sent.contains("_type=Condition"), "{sent}");
}

/// A gateway with one API-key source whose key carries `scopes`.
async fn keyed(scopes: &str) -> TestApp {
    let digest = hex::encode(Sha256::digest(PARTNER_KEY.as_bytes()));
    TestApp::spawn_with(&format!(
        "\n[[sources]]\nid = \"{SOURCE}\"\nname = \"Scoped\"\napi_key_sha256 = \"{digest}\"\ndestinations = [\"spec-ehr\"]\nscopes = {scopes}\n"
    ))
    .await
}

#[tokio::test]
async fn a_file_of_a_type_outside_the_scopes_is_403_and_the_ehr_is_not_asked_for_it() {
    let app = keyed(r#"["system/Patient.read", "system/Observation.read"]"#).await;
    app.upstream_accepts_kickoffs().await;
    upstream_completes(&app).await;
    Mock::given(method("GET"))
        .and(path("/files/patient.ndjson"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string("{\"resourceType\":\"Patient\"}\n"),
        )
        .expect(1)
        .mount(&app.upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/files/observation.ndjson"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}\n"))
        .expect(0)
        .mount(&app.upstream)
        .await;
    let mut envelope = seed();
    envelope["_type"] = json!("Patient,Observation");
    let kick = app
        .post_envelope_as(PARTNER_KEY, &spec_group_route(), &envelope)
        .await;
    assert_eq!(kick.status(), 202);
    let location = kick.headers()["Content-Location"]
        .to_str()
        .unwrap()
        .to_owned();
    let status = app.get_as(PARTNER_KEY, local(&app, &location)).await;
    assert_eq!(status.status(), 200);

    // Narrow the source's scopes (as an operator would) and restart on the same store: the export's
    // Observation file is now outside them.
    let mut settings = app.settings.clone();
    settings.sources[0].scopes =
        vec![fhirgate::domain::SystemScope::try_from("system/Patient.rs").unwrap()];
    let app = app.with_settings(settings).await;
    let file = |n: usize| {
        app.client
            .get(local(&app, &location).replace("export-status", "export-file") + &format!("/{n}"))
            .bearer_auth(PARTNER_KEY)
            .send()
    };

    let patient = file(0).await.unwrap();
    let observation = file(1).await.unwrap();

    assert_eq!(patient.status(), 200);
    assert_eq!(observation.status(), 403);
    let outcome = json_body(observation).await;
    assert_eq!(codes(&outcome), ["forbidden"]);
}

#[tokio::test]
async fn a_jku_is_accepted_only_when_it_is_the_registered_jwks_url() {
    let secret = p384::SecretKey::random(&mut rand::rngs::OsRng);
    let keys_host = wiremock::MockServer::start().await;
    Mock::given(path("/jwks.json"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"keys": [jwk(&secret, "partner-key-1")]})),
        )
        .mount(&keys_host)
        .await;
    let registered = format!("{}/jwks.json", keys_host.uri());
    let app = TestApp::spawn_with(&format!(
        "\n[[sources]]\nid = \"{SOURCE}\"\nname = \"Partner publishing keys\"\njwks_url = \"{registered}\"\ndestinations = [\"spec-ehr\"]\n"
    ))
    .await;
    let p = Partner {
        app,
        private_pem: secret.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: String::new(),
        _jwks: tempfile::NamedTempFile::new().unwrap(),
    };
    let signed_with_jku = |jku: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
        header.kid = Some("partner-key-1".into());
        header.jku = Some(jku.to_owned());
        jsonwebtoken::encode(
            &header,
            &claims(240),
            &jsonwebtoken::EncodingKey::from_ec_pem(p.private_pem.as_bytes()).unwrap(),
        )
        .unwrap()
    };

    let bad = with(
        form(&p, "system/*.read"),
        "client_assertion",
        &signed_with_jku("https://attacker.example/jwks.json"),
    );
    let said = oauth_error(post_token(&p, &bad).await, 401, "invalid_client").await;
    assert!(said.contains("jku"), "{said}");
    assert!(!said.contains("attacker.example"), "not echoed: {said}");
    let good = with(
        form(&p, "system/*.read"),
        "client_assertion",
        &signed_with_jku(&registered),
    );
    assert_eq!(post_token(&p, &good).await.status(), 200);
}

#[tokio::test]
async fn a_jku_on_a_source_registered_with_a_key_file_is_refused() {
    let p = partner_with("").await;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
    header.kid = Some("partner-key-1".into());
    header.jku = Some("test-bad-jku".into());
    let assertion = jsonwebtoken::encode(
        &header,
        &claims(240),
        &jsonwebtoken::EncodingKey::from_ec_pem(p.private_pem.as_bytes()).unwrap(),
    )
    .unwrap();

    let response = post_token(
        &p,
        &with(form(&p, "system/*.read"), "client_assertion", &assertion),
    )
    .await;

    oauth_error(response, 401, "invalid_client").await;
}

#[tokio::test]
async fn metadata_is_public_and_names_the_token_endpoint_when_credentials_are_configured() {
    let p = partner_with("").await;

    let response = p
        .app
        .get(p.app.url("/fhir/R4/spec-ehr/Development/metadata"))
        .await;

    assert_eq!(response.status(), 200);
    let statement = json_body(response).await;
    let security = &statement["rest"][0]["security"];
    let oauth = security["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
        })
        .expect("the SMART oauth-uris extension");
    assert_eq!(oauth["extension"][0]["url"], "token");
    assert_eq!(oauth["extension"][0]["valueUri"], token_url());
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    let smart = json_body(
        p.app
            .client
            .get(
                p.app
                    .url("/fhir/R4/spec-ehr/Development/.well-known/smart-configuration"),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        smart["scopes_supported"],
        json!(["system/*.read", "system/*.rs"])
    );
    assert_eq!(
        smart["token_endpoint_auth_signing_alg_values_supported"],
        json!(["RS384", "ES384"])
    );
}

#[tokio::test]
async fn an_open_gateways_metadata_has_no_security_section() {
    let app = TestApp::spawn().await;

    let statement = json_body(
        app.get(app.url("/fhir/R4/spec-ehr/Development/metadata"))
            .await,
    )
    .await;

    assert!(statement["rest"][0].get("security").is_none());
}

#[tokio::test]
async fn a_401_says_bearer_and_how_a_signed_assertion_source_authenticates() {
    let p = partner_with("").await;
    let kick = |token: Option<&str>| {
        let mut req = p
            .app
            .client
            .post(p.app.url(&spec_group_route()))
            .json(&seed());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };

    let none = kick(None).await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["WWW-Authenticate"], "Bearer");
    let said = json_body(none).await["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        said.contains("/auth/token") && !said.contains("API key"),
        "{said}"
    );

    let invalid = kick(Some("invalidToken")).await.unwrap();
    assert_eq!(invalid.status(), 401);
    assert_eq!(
        invalid.headers()["WWW-Authenticate"],
        r#"Bearer error="invalid_token""#
    );
    let outcome = json_body(invalid).await;
    assert_eq!(codes(&outcome), ["security"]);
    let said = outcome["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(said.contains("expired"), "{said}");
}

#[tokio::test]
async fn a_401_for_an_api_key_source_talks_about_api_keys() {
    let app = keyed(r#"["system/*.read"]"#).await;

    let response = app
        .post_envelope_as("canary-not-the-key", &spec_group_route(), &seed())
        .await;

    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["WWW-Authenticate"],
        r#"Bearer error="invalid_token""#
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains("API key") && !text.contains("canary-not-the-key"),
        "{text}"
    );
}

#[tokio::test]
async fn a_native_kickoff_accepting_plain_json_is_400_and_the_ehr_is_not_called() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 0).await;

    let response = app
        .client
        .get(app.url("/fhir/R4/spec-ehr/Development/Patient/$export"))
        .header("Accept", "application/json")
        .header("Prefer", "respond-async")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 400);
    let outcome = json_body(response).await;
    assert_eq!(expressions(&outcome), ["Accept"]);
}

#[tokio::test]
async fn an_envelope_may_still_accept_plain_json() {
    let app = TestApp::spawn().await;
    app.upstream_accepts_kickoffs().await;

    let response = app
        .client
        .post(app.url(&spec_group_route()))
        .header("Accept", "application/json")
        .json(&seed())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn a_download_with_a_token_reauthorized_for_another_type_is_refused() {
    let p = partner_with("").await;
    p.app.upstream_accepts_kickoffs().await;
    upstream_completes(&p.app).await;
    Mock::given(method("GET"))
        .and(path("/files/patient.ndjson"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}\n"))
        .expect(1)
        .mount(&p.app.upstream)
        .await;
    let full = token_for(&p, "system/*.read").await;
    let kick = p
        .app
        .post_envelope_as(&full, &spec_group_route(), &seed())
        .await;
    assert_eq!(kick.status(), 202);
    let location = kick.headers()["Content-Location"]
        .to_str()
        .unwrap()
        .to_owned();
    let status = p.app.get_as(&full, local(&p.app, &location)).await;
    assert_eq!(status.status(), 200);
    let first_file = json_body(status).await["output"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    // The conformance suite's way: re-authorize with a scope that does not cover the first file.
    let observation_only = token_for(&p, "system/Observation.read").await;
    let download = |token: String| {
        p.app
            .client
            .get(local(&p.app, &first_file))
            .bearer_auth(token)
            .send()
    };

    let refused = download(observation_only).await.unwrap();
    let allowed = download(full).await.unwrap();

    assert_eq!(refused.status(), 403);
    assert_eq!(allowed.status(), 200);
}
