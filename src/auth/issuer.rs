//! The gateway's own token endpoint (`POST /auth/token`) for sources that authenticate Redox-style with a
//! signed JWT (SMART Backend Services, client side): the assertion is checked against the source's
//! registered keys, and a five-minute access token signed by the gateway comes back.

use super::oauth::{OAuthError, OAuthErrorCode};
use crate::config::{Settings, SourceSettings};
use crate::domain::Scopes;
use crate::domain::secret::Secret;
use chrono::Utc;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Lifetime of the gateway's access tokens.
pub const ACCESS_TOKEN_SECS: i64 = 300;
/// Longest an assertion may be valid for, from now.
const MAX_ASSERTION_SECS: i64 = 300;
/// Clock skew tolerated on `exp`, `iat` and `nbf`.
const LEEWAY_SECS: i64 = 30;

/// Claims of the gateway's access tokens.
#[derive(Debug, Serialize, Deserialize)]
struct AccessClaims {
    iss: String,
    aud: String,
    sub: String,
    exp: i64,
    iat: i64,
    jti: String,
    /// The granted scopes, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    jti: Option<String>,
}

/// A source's fetched key set: what the last fetch gave (`None`: it failed) and when.
struct FetchedKeys {
    set: Option<JwkSet>,
    at: std::time::Instant,
}

/// The token endpoint's state: the signing key and the sources' fetched key sets. Used assertion ids
/// live in the job store, shared by replicas.
pub struct TokenIssuer {
    key: Secret,
    /// Per JWKS URL (so per configured source: bounded by the configuration), behind its own lock so
    /// one fetch serves every request waiting on it.
    jwks_cache: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<FetchedKeys>>>>>,
    http: reqwest::Client,
    jwks_timeout: std::time::Duration,
    jwks_refresh_min: std::time::Duration,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenIssuer([redacted])")
    }
}

fn refuse(why: &str) -> OAuthError {
    OAuthError::invalid_client(why)
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// What a verified assertion leaves to check once the rest of the request holds.
struct VerifiedAssertion {
    exp: i64,
    jti: String,
}

/// An issued access token, for its source, with the scopes granted.
pub struct Issued {
    pub token: Secret,
    pub source: SourceSettings,
    pub scopes: Scopes,
}

/// The token request's form fields: each at most once (RFC 6749 §3.2).
#[derive(Debug, Default)]
pub struct TokenForm(Vec<(String, String)>);

impl TokenForm {
    /// Reads an `application/x-www-form-urlencoded` body.
    pub fn parse(body: &[u8]) -> Result<TokenForm, OAuthError> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
        for (i, (name, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(OAuthError::invalid_request(format!(
                    "The parameter {} is sent more than once.",
                    crate::domain::shorten(name)
                )));
            }
        }
        Ok(TokenForm(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A parameter that must be present (an empty `scope` is present, and refused as a scope).
    fn required(&self, name: &str) -> Result<&str, OAuthError> {
        match self.get(name) {
            Some(v) if !v.is_empty() || name == "scope" => Ok(v),
            _ => Err(OAuthError::invalid_request(format!(
                "The parameter {name} is required."
            ))),
        }
    }
}

impl TokenIssuer {
    /// The issuer; source JWKS are fetched with the gateway's one outbound client policy.
    pub fn new(
        settings: &Settings,
        http: &crate::connectors::http::UpstreamClient,
    ) -> Result<Self, crate::config::ConfigError> {
        let key = match &settings.auth.signing_key_env {
            Some(var) => match std::env::var(var) {
                Ok(v) if v.len() >= 32 => Secret::new(v),
                _ => {
                    return Err(crate::config::ConfigError::Invalid(format!(
                        "auth.signing_key_env: environment variable {var} must hold at least 32 characters"
                    )));
                }
            },
            None => Secret::new(format!("{}{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4())),
        };
        Ok(TokenIssuer {
            key,
            jwks_cache: Mutex::new(HashMap::new()),
            http: http.plain().clone(),
            jwks_timeout: std::time::Duration::from_secs_f64(settings.auth.jwks_timeout_secs),
            jwks_refresh_min: std::time::Duration::from_secs(settings.auth.jwks_refresh_min_secs),
        })
    }

    /// The token endpoint's URL: the `aud` of client assertions.
    pub fn token_url(settings: &Settings) -> String {
        format!(
            "{}/auth/token",
            settings.server.public_url.as_str().trim_end_matches('/')
        )
    }

    async fn jwks(&self, source: &SourceSettings, kid: &str) -> Result<JwkSet, OAuthError> {
        if let Some(path) = &source.jwks_file {
            let text = std::fs::read_to_string(path)
                .map_err(|_| refuse("The source's registered keys cannot be read."))?;
            return serde_json::from_str(&text)
                .map_err(|_| refuse("The source's registered keys are not a JWKS."));
        }
        let Some(url) = &source.jwks_url else {
            return Err(refuse("This source has no registered public keys."));
        };
        // One entry per configured URL; whoever holds its lock fetches, the others then read.
        let entry = {
            let mut cache = self
                .jwks_cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            cache.entry(url.to_string()).or_default().clone()
        };
        let mut fetched = entry.lock().await;
        let fresh = fetched
            .as_ref()
            .is_some_and(|f| f.at.elapsed() < self.jwks_refresh_min);
        let knows_kid = fetched
            .as_ref()
            .and_then(|f| f.set.as_ref())
            .is_some_and(|set| set.find(kid).is_some());
        // A known kid is served from the cache; an unknown one (or a failed fetch) is asked for again
        // at most once per `[auth] jwks_refresh_min_secs`, however many callers send random kids.
        if !knows_kid && !fresh {
            let set = self.fetch_jwks(url.clone()).await;
            if set.is_none() {
                tracing::warn!(message = "A source's JWKS URL could not be read.", source = %source.id);
            }
            *fetched = Some(FetchedKeys {
                set,
                at: std::time::Instant::now(),
            });
        }
        match fetched.as_ref().and_then(|f| f.set.clone()) {
            Some(set) => Ok(set),
            None => Err(refuse(
                "The source's JWKS URL could not be read; try again later.",
            )),
        }
    }

    /// One fetch of a JWKS, bounded by `[auth] jwks_timeout_secs`.
    async fn fetch_jwks(&self, url: url::Url) -> Option<JwkSet> {
        use crate::connectors::http::{Resend, execute};
        let request = self.http.get(url).timeout(self.jwks_timeout).build().ok()?;
        let response = execute(&self.http, request, Resend::WhenClosedUnanswered)
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        tokio::time::timeout(self.jwks_timeout, response.json::<JwkSet>())
            .await
            .ok()?
            .ok()
    }

    /// Checks a token request (a client assertion and the scopes asked for) and, if it holds, issues
    /// an access token for its source carrying the granted scopes.
    pub async fn exchange(
        &self,
        settings: &Settings,
        store: &dyn crate::store::AssertionStore,
        form: &TokenForm,
    ) -> Result<Issued, OAuthError> {
        let grant_type = form.required("grant_type")?;
        if grant_type != "client_credentials" {
            return Err(OAuthError::new(
                OAuthErrorCode::UnsupportedGrantType,
                "grant_type must be client_credentials (SMART Backend Services).",
            ));
        }
        let assertion_type = form.required("client_assertion_type")?;
        let assertion = form.required("client_assertion")?;
        let scope = form.required("scope")?;
        if assertion_type != JWT_BEARER {
            return Err(OAuthError::invalid_client(format!(
                "client_assertion_type must be {JWT_BEARER}."
            )));
        }
        let (source, claims) = self.verify_assertion(settings, assertion).await?;
        let requested = Scopes::parse(scope)
            .map_err(|e| OAuthError::invalid_scope(format!("The scope {e}.")))?;
        if !requested.asks_to_read() {
            return Err(OAuthError::invalid_scope(
                "Write scopes are never granted: fhirgate is a read-only Bulk Data service. Ask for read scopes such as system/*.read or system/*.rs.",
            ));
        }
        let granted = requested.grant(&source.allowed_scopes());
        if granted.is_empty() {
            return Err(OAuthError::invalid_scope(format!(
                "None of the requested scopes is allowed for this client; it may be granted: {}.",
                source.allowed_scopes()
            )));
        }
        // Remembered in the job store until the assertion expires, so no replica accepts it twice.
        // Checked last, so a request refused for its scope does not use up its assertion.
        let remember_until =
            chrono::DateTime::from_timestamp(claims.exp + LEEWAY_SECS, 0).unwrap_or_else(Utc::now);
        if !store
            .use_jti(&source.id.to_string(), &claims.jti, remember_until)
            .await?
        {
            return Err(OAuthError::invalid_client(
                "The client assertion's jti was used before.",
            ));
        }
        let token_url = Self::token_url(settings);
        let now = Utc::now().timestamp();
        let access = AccessClaims {
            iss: token_url.clone(),
            aud: token_url,
            sub: source.id.to_string(),
            exp: now + ACCESS_TOKEN_SECS,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: Some(granted.to_string()),
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &access,
            &EncodingKey::from_secret(self.key.expose().as_bytes()),
        )
        .map_err(|_| {
            tracing::error!(message = "Access token could not be signed.");
            OAuthError::new(
                OAuthErrorCode::TemporarilyUnavailable,
                "The gateway could not sign an access token; try again shortly.",
            )
        })?;
        Ok(Issued {
            token: Secret::new(token),
            source: source.clone(),
            scopes: granted,
        })
    }

    /// Checks the client assertion: header, issuer, `jku`, signature, audience, lifetime and `jti`'s
    /// presence (its single use is checked once the rest of the request holds).
    async fn verify_assertion<'s>(
        &self,
        settings: &'s Settings,
        assertion: &str,
    ) -> Result<(&'s SourceSettings, VerifiedAssertion), OAuthError> {
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| {
            refuse("The client assertion's header is not valid, or its alg is not RS384 or ES384.")
        })?;
        if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384) {
            return Err(refuse(
                "The client assertion must be signed with RS384 or ES384.",
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| refuse("The client assertion's header has no kid."))?;
        // Read the claims before the signature only to find whose keys to check it with.
        let unverified = jsonwebtoken::dangerous::insecure_decode::<AssertionClaims>(assertion)
            .map_err(|_| refuse("The client assertion's claims are not valid."))?
            .claims;
        let source = settings
            .sources
            .iter()
            .find(|s| s.id.to_string() == unverified.iss)
            .ok_or_else(|| refuse("The client assertion's iss is not a registered source."))?;
        // A jku names where the keys are: only the source's registered JWKS URL may be named, so an
        // attacker cannot point the gateway at keys of their own.
        if let Some(jku) = &header.jku
            && source.jwks_url.as_ref().is_none_or(|u| u.as_str() != jku)
        {
            return Err(refuse(
                "The client assertion's jku is not the JWKS URL registered for this client.",
            ));
        }
        let jwks = self.jwks(source, &kid).await?;
        let jwk = jwks
            .find(&kid)
            .ok_or_else(|| refuse("The client assertion's kid is not among the source's keys."))?;
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|_| refuse("The registered key for this kid cannot be used."))?;
        let token_url = Self::token_url(settings);
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[token_url.as_str()]);
        validation.set_issuer(&[source.id.to_string()]);
        validation.sub = Some(source.id.to_string());
        validation.leeway = LEEWAY_SECS as u64;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                refuse(match e.kind() {
                    ErrorKind::ExpiredSignature => "The client assertion has expired.",
                    ErrorKind::InvalidAudience => {
                        "The client assertion's aud is not this token endpoint."
                    }
                    ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => {
                        "The client assertion's iss and sub must both be the source's id."
                    }
                    ErrorKind::InvalidSignature => {
                        "The client assertion's signature does not verify."
                    }
                    ErrorKind::ImmatureSignature => "The client assertion is not valid yet.",
                    _ => "The client assertion is not valid.",
                })
            })?
            .claims;
        let now = Utc::now().timestamp();
        if claims.exp > now + MAX_ASSERTION_SECS + LEEWAY_SECS {
            return Err(refuse(
                "The client assertion's exp is more than five minutes ahead.",
            ));
        }
        if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS)
            || claims.nbf.is_some_and(|nbf| nbf > now + LEEWAY_SECS)
        {
            return Err(refuse("The client assertion is dated in the future."));
        }
        let jti = claims
            .jti
            .filter(|j| !j.is_empty())
            .ok_or_else(|| refuse("The client assertion has no jti."))?;
        let _ = claims.sub;
        Ok((
            source,
            VerifiedAssertion {
                exp: claims.exp,
                jti,
            },
        ))
    }

    /// The source an access token issued by this gateway belongs to, and the scopes it was granted, if
    /// the token is valid.
    pub fn source_of<'a>(
        &self,
        settings: &'a Settings,
        token: &str,
    ) -> Option<(&'a SourceSettings, Scopes)> {
        let token_url = Self::token_url(settings);
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[token_url.as_str()]);
        validation.set_issuer(&[token_url.as_str()]);
        let claims = jsonwebtoken::decode::<AccessClaims>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(self.key.expose().as_bytes()),
            &validation,
        )
        .ok()?
        .claims;
        let source = settings
            .sources
            .iter()
            .find(|s| s.id.to_string() == claims.sub)?;
        // Never more than the source is allowed today, even if its scopes were narrowed since.
        let scopes = match claims.scope.as_deref() {
            Some(text) => Scopes::parse(text).ok()?.grant(&source.allowed_scopes()),
            None => source.allowed_scopes(),
        };
        Some((source, scopes))
    }
}
