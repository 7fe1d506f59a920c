//! SMART Backend Services: the gateway's own access tokens for an EHR, from a signed client assertion.
//! One token per destination and environment, cached until shortly before it expires and shared by
//! concurrent requests (a single token request at a time), refreshed when the EHR answers 401.

use super::UpstreamError;
use crate::domain::secret::Secret;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, OnceCell};
use url::Url;
use uuid::Uuid;

/// Refresh this long before the EHR's `expires_in` runs out.
const EARLY_REFRESH: Duration = Duration::from_secs(30);
/// Lifetime of a client assertion (the spec allows at most five minutes).
const ASSERTION_LIFETIME_SECS: i64 = 300;

/// A destination's SMART Backend Services client.
pub struct SmartClient {
    client_id: String,
    key: EncodingKey,
    alg: Algorithm,
    kid: String,
    jku: Option<String>,
    scope: String,
    configured_token_url: Option<Url>,
    discovered_token_url: OnceCell<Url>,
    cache: Mutex<Option<(Secret, Instant)>>,
    http: reqwest::Client,
    /// Metrics and the destination/environment labels token fetches are counted under.
    observer: Option<(
        std::sync::Arc<crate::observe::metrics::Metrics>,
        String,
        String,
    )>,
}

impl std::fmt::Debug for SmartClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmartClient")
            .field("client_id", &self.client_id)
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("key", &"[redacted]")
            .finish()
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AssertionClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The settings a SMART client is built from, secrets already read.
pub struct SmartConfig {
    pub client_id: String,
    pub private_key_pem: Secret,
    pub alg: String,
    pub kid: String,
    pub jku: Option<String>,
    pub scope: String,
    pub token_url: Option<Url>,
}

fn refused(why: &str) -> UpstreamError {
    UpstreamError::CredentialsRefused(why.to_owned())
}

impl SmartClient {
    pub fn new(config: SmartConfig, http: reqwest::Client) -> Result<Self, String> {
        let (alg, key) = match config.alg.as_str() {
            "RS384" => (
                Algorithm::RS384,
                EncodingKey::from_rsa_pem(config.private_key_pem.expose().as_bytes())
                    .map_err(|_| "is not an RSA private key in PEM form".to_owned())?,
            ),
            "ES384" => (
                Algorithm::ES384,
                EncodingKey::from_ec_pem(config.private_key_pem.expose().as_bytes())
                    .map_err(|_| "is not a P-384 private key in PKCS#8 PEM form".to_owned())?,
            ),
            _ => return Err("alg must be RS384 or ES384".to_owned()),
        };
        Ok(SmartClient {
            client_id: config.client_id,
            key,
            alg,
            kid: config.kid,
            jku: config.jku,
            scope: config.scope,
            configured_token_url: config.token_url,
            discovered_token_url: OnceCell::new(),
            cache: Mutex::new(None),
            http,
            observer: None,
        })
    }

    /// Counts this client's token fetches under `destination` and `environment`.
    pub fn observed(
        mut self,
        metrics: std::sync::Arc<crate::observe::metrics::Metrics>,
        destination: &str,
        environment: &str,
    ) -> Self {
        self.observer = Some((metrics, destination.to_owned(), environment.to_owned()));
        self
    }

    fn observe_fetch(&self, started: Instant, status: Option<u16>, ok: bool) {
        let Some((metrics, destination, environment)) = &self.observer else {
            return;
        };
        let outcome = if ok { "ok" } else { "refused" };
        metrics.token_fetch(destination, environment, ok);
        metrics.upstream(
            destination,
            environment,
            "token",
            outcome,
            started.elapsed().as_secs_f64(),
        );
        crate::observe::context::push_upstream(&crate::observe::context::UpstreamCall {
            destination,
            environment,
            operation: "token",
            status,
            outcome,
            duration: started.elapsed(),
            request_id: None,
        });
    }

    /// The signed client assertion for `token_url`.
    pub fn assertion(&self, token_url: &Url) -> Result<Secret, UpstreamError> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".to_owned());
        header.jku = self.jku.clone();
        let now = chrono::Utc::now().timestamp();
        let claims = AssertionClaims {
            iss: self.client_id.clone(),
            sub: self.client_id.clone(),
            aud: token_url.to_string(),
            exp: now + ASSERTION_LIFETIME_SECS,
            iat: now,
            jti: Uuid::new_v4().to_string(),
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map(Secret::new)
            .map_err(|_| refused("the client assertion could not be signed"))
    }

    async fn token_url(&self, base: &Url) -> Result<Url, UpstreamError> {
        if let Some(url) = &self.configured_token_url {
            return Ok(url.clone());
        }
        self.discovered_token_url
            .get_or_try_init(|| async {
                let well_known = format!(
                    "{}/.well-known/smart-configuration",
                    base.as_str().trim_end_matches('/')
                );
                let answer = self
                    .http
                    .get(&well_known)
                    .header("Accept", "application/json")
                    .send()
                    .await
                    .map_err(|_| UpstreamError::Unreachable)?;
                if !answer.status().is_success() {
                    return Err(UpstreamError::BadAnswer(
                        "the EHR's .well-known/smart-configuration could not be read".into(),
                    ));
                }
                let doc: serde_json::Value = answer.json().await.map_err(|_| {
                    UpstreamError::BadAnswer("the EHR's smart-configuration is not JSON".into())
                })?;
                doc.get("token_endpoint")
                    .and_then(|v| v.as_str())
                    .and_then(|s| Url::parse(s).ok())
                    .ok_or_else(|| {
                        UpstreamError::BadAnswer(
                            "the EHR's smart-configuration names no token_endpoint".into(),
                        )
                    })
            })
            .await
            .cloned()
    }

    /// A valid access token: the cached one, or a new one. `rejected` is a token the EHR just refused
    /// (401): it is replaced, unless another request already replaced it.
    pub async fn token(
        &self,
        base: &Url,
        rejected: Option<&Secret>,
    ) -> Result<Secret, UpstreamError> {
        let mut cache = self.cache.lock().await;
        if let Some((token, valid_until)) = cache.as_ref()
            && *valid_until > Instant::now()
            && rejected.is_none_or(|r| r != token)
        {
            return Ok(token.clone());
        }
        let started = Instant::now();
        let token_url = self.token_url(base).await.inspect_err(|_| {
            self.observe_fetch(started, None, false);
        })?;
        // A token request whose connection closed before any answer goes again on another, made
        // anew: its client assertion carries a fresh jti, as an EHR that saw the first one (and
        // remembers its jti against replay) would refuse it a second time.
        let sent = super::http::execute_anew(&self.http, || {
            let assertion = self.assertion(&token_url)?;
            let form = [
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.expose()),
                ("scope", self.scope.as_str()),
            ];
            self.http
                .post(token_url.clone())
                .header("Accept", "application/json")
                .form(&form)
                .build()
                .map_err(|_| refused("the EHR's token request could not be made"))
        })
        .await?;
        let answer = sent.map_err(|_| {
            self.observe_fetch(started, None, false);
            refused("the EHR's token endpoint could not be reached")
        })?;
        let status = answer.status().as_u16();
        if !answer.status().is_success() {
            self.observe_fetch(started, Some(status), false);
            tracing::warn!(
                message = "The EHR's token endpoint refused the gateway's client assertion.",
                status = answer.status().as_u16()
            );
            return Err(refused(
                "the EHR's token endpoint refused the gateway's credentials",
            ));
        }
        let body: TokenAnswer = answer.json().await.map_err(|_| {
            self.observe_fetch(started, Some(status), false);
            refused("the EHR's token endpoint answered without an access token")
        })?;
        self.observe_fetch(started, Some(status), true);
        let lifetime = Duration::from_secs(body.expires_in.unwrap_or(300));
        let valid_until = Instant::now() + lifetime.saturating_sub(EARLY_REFRESH);
        let token = Secret::new(body.access_token);
        *cache = Some((token.clone(), valid_until));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p384::pkcs8::{EncodePrivateKey, LineEnding};
    use std::sync::atomic::Ordering;

    const TOKEN: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 41\r\n\r\n{\"access_token\":\"t0k3n\",\"expires_in\":300}";

    #[tokio::test]
    async fn a_token_request_whose_kept_alive_connection_closes_unanswered_is_made_again_on_another()
     {
        let (addr, connections) =
            crate::connectors::http::testing::closes_its_kept_alive_connection_on_the_second_request_answering(TOKEN)
                .await;
        let key = p384::SecretKey::random(&mut rand::thread_rng());
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let config = SmartConfig {
            client_id: "gateway".into(),
            private_key_pem: Secret::new(pem.to_string()),
            alg: "ES384".into(),
            kid: "k1".into(),
            jku: None,
            scope: "system/*.read".into(),
            token_url: Some(Url::parse(&format!("http://{addr}/token")).unwrap()),
        };
        let client = SmartClient::new(config, reqwest::Client::new()).unwrap();
        let base = Url::parse(&format!("http://{addr}/fhir/")).unwrap();
        let first = client.token(&base, None).await.unwrap();
        assert_eq!(first.expose(), "t0k3n");

        // The EHR refused that token (401): the next request goes out over the kept-alive connection,
        // which the EHR closes without answering.
        let again = client.token(&base, Some(&first)).await;

        assert_eq!(
            again.expect("made again on another connection").expose(),
            "t0k3n"
        );
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }
}
