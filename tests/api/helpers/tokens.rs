//! A partner that authenticates with signed client assertions (ES384) at `/auth/token`.

use super::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p384::elliptic_curve::sec1::ToEncodedPoint;
use p384::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{Value, json};

pub const SOURCE: &str = "7ce6f387-c33c-417d-8682-81e83628cbd9";

pub struct Partner {
    pub app: TestApp,
    pub private_pem: String,
    pub public_pem: String,
    pub _jwks: tempfile::NamedTempFile,
}

pub fn jwk(secret: &p384::SecretKey, kid: &str) -> Value {
    let point = secret.public_key().to_encoded_point(false);
    json!({"kty": "EC", "crv": "P-384", "kid": kid, "alg": "ES384", "use": "sig",
           "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()), "y": URL_SAFE_NO_PAD.encode(point.y().unwrap())})
}

/// A gateway with one source that signs its assertions with a fresh P-384 key; `extra` is appended to
/// the source's table (e.g. `scopes = [...]`).
pub async fn partner_with(extra: &str) -> Partner {
    let secret = p384::SecretKey::random(&mut rand::rngs::OsRng);
    let jwks = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        jwks.path(),
        json!({"keys": [jwk(&secret, "partner-key-1")]}).to_string(),
    )
    .unwrap();
    let app = TestApp::spawn_with(&format!(
        "\n[[sources]]\nid = \"{SOURCE}\"\nname = \"Partner with keys\"\njwks_file = \"{}\"\ndestinations = [\"spec-ehr\"]\n{extra}\n",
        jwks.path().display()
    ))
    .await;
    Partner {
        app,
        private_pem: secret.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
        _jwks: jwks,
    }
}

pub fn token_url() -> String {
    format!("{PUBLIC_URL}/auth/token")
}

pub fn claims(exp_in: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": SOURCE, "sub": SOURCE, "aud": token_url(), "exp": now + exp_in, "iat": now, "jti": uuid::Uuid::new_v4().to_string()})
}

pub fn sign(p: &Partner, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES384);
    header.kid = Some(kid.to_owned());
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_ec_pem(p.private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}
