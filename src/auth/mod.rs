//! Who is calling: partner sources authenticate with an API key (`Authorization: Bearer <key>`), whose
//! SHA-256 the configuration holds, or with an access token from the gateway's own token endpoint
//! (`issuer`, SMART Backend Services). Each source reaches only the destinations granted to it, and reads
//! only the resource types its scopes grant.

pub mod admin;
pub mod issuer;
pub mod oauth;

use crate::config::{Settings, SourceSettings};
use crate::domain::{EnvironmentFlag, Scopes};
use crate::error::GatewayError;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::{Ready, ready};
use std::num::NonZeroU32;
use subtle::ConstantTimeEq;

/// The caller of a partner route.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No source has credentials configured: the gateway is open (development and the sandbox).
    Open,
    /// An authenticated source, with the scopes it holds: those of its access token, or for an API key
    /// every scope the source is configured with.
    Source {
        source: Box<SourceSettings>,
        scopes: Scopes,
    },
}

impl Caller {
    /// The key jobs are owned by; `fallback` (the envelope's `Meta.Source.ID`) when the gateway is open.
    pub fn job_owner(&self, fallback: Option<String>) -> String {
        match self {
            Caller::Open => fallback.unwrap_or_else(|| "anonymous".to_owned()),
            Caller::Source { source, .. } => source.id.to_string(),
        }
    }

    /// Whether this caller may use `slug` in `env`.
    pub fn may_reach(&self, slug: &str, env: EnvironmentFlag) -> bool {
        match self {
            Caller::Open => true,
            Caller::Source { source, .. } => source
                .destinations
                .iter()
                .any(|grant| grant.covers(slug, env)),
        }
    }

    /// 403 unless the caller may use this destination; checked before any upstream call.
    pub fn authorize(&self, slug: &str, env: EnvironmentFlag) -> Result<(), GatewayError> {
        if self.may_reach(slug, env) {
            Ok(())
        } else {
            Err(GatewayError::Forbidden(crate::domain::Issue::general(
                crate::domain::IssueCode::Forbidden,
                format!("This source is not allowed to use destination '{slug}' in {env}."),
            )))
        }
    }

    /// The authenticated source, if any.
    pub fn source(&self) -> Option<&SourceSettings> {
        match self {
            Caller::Open => None,
            Caller::Source { source, .. } => Some(source.as_ref()),
        }
    }

    /// The scopes the caller holds; `None` on an open gateway, where everything may be read.
    pub fn scopes(&self) -> Option<&Scopes> {
        match self {
            Caller::Open => None,
            Caller::Source { scopes, .. } => Some(scopes),
        }
    }

    /// Whether the caller may read resources of type `name`.
    pub fn reads(&self, name: &str) -> bool {
        self.scopes().is_none_or(|s| s.reads(name))
    }
}

/// Whether any source has credentials, which closes the gateway to unauthenticated callers.
pub fn auth_required(settings: &Settings) -> bool {
    settings
        .sources
        .iter()
        .any(|s| s.api_key_sha256.is_some() || s.jwks_file.is_some() || s.jwks_url.is_some())
}

/// Finds the source whose key hashes to the configured digest. Every source is compared, in constant
/// time, so the time taken says nothing about which digest came close.
pub fn source_for_key<'a>(settings: &'a Settings, key: &str) -> Option<&'a SourceSettings> {
    let digest = Sha256::digest(key.as_bytes());
    let mut found = None;
    for source in &settings.sources {
        let Some(expected) = source
            .api_key_sha256
            .as_deref()
            .and_then(|h| hex::decode(h).ok())
        else {
            continue;
        };
        if bool::from(expected.as_slice().ct_eq(digest.as_slice())) {
            found = Some(source);
        }
    }
    found
}

/// Request budgets per source, refilled continuously (GCRA).
#[derive(Debug, Default)]
pub struct RateLimits {
    limiters: HashMap<uuid::Uuid, DefaultDirectRateLimiter>,
    /// `/auth/token` per client address (`[auth] token_rate_limit_per_minute`).
    token: Option<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// Dashboard sign-in attempts per client address ([`LOGIN_ATTEMPTS_PER_MINUTE`]).
    login: Option<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
}

/// Dashboard sign-in attempts each client address may make per minute: a person mistypes a few
/// times; a guesser gets nowhere.
pub const LOGIN_ATTEMPTS_PER_MINUTE: u32 = 10;

/// Addresses the token limiter keeps before it forgets those whose budget is whole again.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

impl RateLimits {
    pub fn new(settings: &Settings) -> Self {
        let limiters = settings
            .sources
            .iter()
            .filter_map(|s| {
                let per_minute = NonZeroU32::new(s.rate_limit_per_minute)?;
                Some((s.id, RateLimiter::direct(Quota::per_minute(per_minute))))
            })
            .collect();
        let token = NonZeroU32::new(settings.auth.token_rate_limit_per_minute)
            .map(|n| RateLimiter::keyed(Quota::per_minute(n)));
        let login = NonZeroU32::new(LOGIN_ATTEMPTS_PER_MINUTE)
            .map(|n| RateLimiter::keyed(Quota::per_minute(n)));
        RateLimits {
            limiters,
            token,
            login,
        }
    }

    /// Spends one token request of `ip`'s budget; the seconds to wait when it is spent. The map of
    /// addresses is bounded: past [`MAX_TRACKED_ADDRESSES`], addresses back at a full budget are
    /// dropped.
    pub fn check_token(&self, ip: std::net::IpAddr) -> Result<(), u64> {
        Self::check_keyed(self.token.as_ref(), ip)
    }

    /// Spends one dashboard sign-in attempt of `ip`'s budget; the seconds to wait when it is spent.
    pub fn check_login(&self, ip: std::net::IpAddr) -> Result<(), u64> {
        Self::check_keyed(self.login.as_ref(), ip)
    }

    fn check_keyed(
        limiter: Option<&governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
        ip: std::net::IpAddr,
    ) -> Result<(), u64> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        if limiter.len() > MAX_TRACKED_ADDRESSES {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Spends one request of `source`'s budget; the seconds to wait when it is spent.
    pub fn check(&self, source: &uuid::Uuid) -> Result<(), u64> {
        let Some(limiter) = self.limiters.get(source) else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// How sources authenticate on this gateway, so a 401 can say what to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CredentialKinds {
    ApiKeys,
    Assertions,
    Both,
}

impl CredentialKinds {
    fn of(settings: &Settings) -> CredentialKinds {
        let keys = settings.sources.iter().any(|s| s.api_key_sha256.is_some());
        let jwt = settings
            .sources
            .iter()
            .any(|s| s.jwks_file.is_some() || s.jwks_url.is_some());
        match (keys, jwt) {
            (true, true) => CredentialKinds::Both,
            (false, true) => CredentialKinds::Assertions,
            _ => CredentialKinds::ApiKeys,
        }
    }

    /// What to send, for a request that sent nothing usable.
    fn how(self, token_url: &str) -> String {
        match self {
            CredentialKinds::ApiKeys => "Send Authorization: Bearer <your API key>.".to_owned(),
            CredentialKinds::Assertions => format!(
                "Send Authorization: Bearer <access token>; get one from {token_url} with a signed client assertion (SMART Backend Services)."
            ),
            CredentialKinds::Both => format!(
                "Send Authorization: Bearer <your API key>, or an access token from {token_url} (SMART Backend Services)."
            ),
        }
    }

    /// What went wrong, for a credential that was sent and is not valid.
    fn invalid(self, token_url: &str) -> String {
        match self {
            CredentialKinds::ApiKeys => "The API key is not valid.".to_owned(),
            CredentialKinds::Assertions => format!(
                "The access token is not valid or has expired (tokens last five minutes); get a new one from {token_url}."
            ),
            CredentialKinds::Both => format!(
                "The API key or access token is not valid; access tokens last five minutes, get a new one from {token_url}."
            ),
        }
    }
}

fn authenticate(req: &HttpRequest) -> Result<Caller, GatewayError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| GatewayError::Internal("application state missing".into()))?;
    if !auth_required(&state.settings) {
        return Ok(Caller::Open);
    }
    // What to tell a caller is worked out only when it is refused.
    let how = || {
        CredentialKinds::of(&state.settings).how(&issuer::TokenIssuer::token_url(&state.settings))
    };
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| GatewayError::Unauthorized(how()))?;
    let (scheme, credential) = header.trim().split_once(' ').unwrap_or((header, ""));
    let credential = credential.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() {
        return Err(GatewayError::Unauthorized(format!(
            "The Authorization header must use the Bearer scheme. {}",
            how()
        )));
    }
    // A token this gateway issued at /auth/token, or else an API key.
    let (source, scopes) = match state.issuer.source_of(&state.settings, credential) {
        Some((source, scopes)) => (source.clone(), scopes),
        None => source_for_key(&state.settings, credential)
            .map(|source| (source.clone(), source.allowed_scopes()))
            .ok_or_else(|| {
                GatewayError::InvalidToken(
                    CredentialKinds::of(&state.settings)
                        .invalid(&issuer::TokenIssuer::token_url(&state.settings)),
                )
            })?,
    };
    crate::observe::context::set_source(&source.id.to_string());
    state
        .limits
        .check(&source.id)
        .map_err(GatewayError::RateLimited)?;
    Ok(Caller::Source {
        source: Box::new(source),
        scopes,
    })
}

impl FromRequest for Caller {
    type Error = GatewayError;
    type Future = Ready<Result<Caller, GatewayError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let key_hash = hex::encode(Sha256::digest(b"partner-key"));
        Settings::from_toml(&format!(
            r#"
[[sources]]
id = "7ce6f387-c33c-417d-8682-81e83628cbd9"
name = "Partner"
api_key_sha256 = "{key_hash}"
destinations = ["ehr:Production"]
[[destinations]]
slug = "ehr"
name = "EHR"
vendor = "bulk-data"
[destinations.environments.Production]
base_url = "https://ehr.example/fhir"
[destinations.environments.Staging]
base_url = "https://ehr.example/fhir"
"#
        ))
        .unwrap()
    }

    #[test]
    fn a_key_is_recognised_by_its_digest_and_grants_are_per_environment() {
        let s = settings();
        let source = source_for_key(&s, "partner-key")
            .expect("known key")
            .clone();
        assert!(source_for_key(&s, "partner-kez").is_none());
        let caller = Caller::Source {
            scopes: source.allowed_scopes(),
            source: Box::new(source),
        };
        assert!(caller.may_reach("ehr", EnvironmentFlag::Production));
        assert!(!caller.may_reach("ehr", EnvironmentFlag::Staging));
        assert!(!caller.may_reach("other", EnvironmentFlag::Production));
    }

    #[test]
    fn a_grant_may_also_be_a_table_of_environments() {
        let s = Settings::from_toml(
            r#"
[[sources]]
id = "7ce6f387-c33c-417d-8682-81e83628cbd9"
name = "Partner"
destinations = [{ slug = "ehr", environments = ["Staging"] }, { slug = "other" }]
[[destinations]]
slug = "ehr"
name = "EHR"
vendor = "bulk-data"
[destinations.environments.Production]
base_url = "https://ehr.example/fhir"
[destinations.environments.Staging]
base_url = "https://ehr.example/fhir"
[[destinations]]
slug = "other"
name = "Other"
vendor = "netsmart"
[destinations.environments.Production]
base_url = "https://other.example/fhir"
"#,
        )
        .unwrap();
        let caller = Caller::Source {
            source: Box::new(s.sources[0].clone()),
            scopes: Scopes::all_read(),
        };
        assert!(caller.may_reach("ehr", EnvironmentFlag::Staging));
        assert!(!caller.may_reach("ehr", EnvironmentFlag::Production));
        assert!(caller.may_reach("other", EnvironmentFlag::Production));
    }

    #[test]
    fn a_grant_naming_an_environment_the_destination_lacks_is_refused_at_boot() {
        let err = Settings::from_toml(
            r#"
[[sources]]
id = "7ce6f387-c33c-417d-8682-81e83628cbd9"
name = "Partner"
destinations = [{ slug = "ehr", environments = ["Development"] }]
[[destinations]]
slug = "ehr"
name = "EHR"
vendor = "bulk-data"
[destinations.environments.Production]
base_url = "https://ehr.example/fhir"
"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sources[0].destinations[0]"), "{err}");
    }
}
