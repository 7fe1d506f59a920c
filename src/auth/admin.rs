//! The operators' credential: `Authorization: Bearer <admin key>`, whose SHA-256 is `[admin]
//! api_key_sha256`, compared in constant time. A partner's credential is refused with 403, so it never
//! opens the admin API; the admin key opens no partner route.

use crate::domain::{Issue, IssueCode};
use crate::error::GatewayError;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use sha2::{Digest, Sha256};
use std::future::{Ready, ready};
use subtle::ConstantTimeEq;

/// A caller holding the admin key.
#[derive(Debug)]
pub struct Admin;

fn authenticate(req: &HttpRequest) -> Result<Admin, GatewayError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| GatewayError::Internal("application state missing".into()))?;
    let key = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            GatewayError::Unauthorized("Send Authorization: Bearer <the admin API key>.".into())
        })?;
    if key_matches(&state.settings, key) {
        return Ok(Admin);
    }
    if is_partner_credential(state, key) {
        return Err(GatewayError::Forbidden(Issue::at(
            IssueCode::Forbidden,
            "Authorization",
            "is a partner credential; the admin API takes only the [admin] key",
        )));
    }
    Err(GatewayError::Unauthorized(
        "The admin API key is not valid.".into(),
    ))
}

/// Whether `key` is the admin key (`[admin] api_key_sha256`), compared in constant time. False when
/// no admin key is configured.
pub fn key_matches(settings: &crate::config::Settings, key: &str) -> bool {
    let digest = Sha256::digest(key.as_bytes());
    settings
        .admin
        .api_key_sha256
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .is_some_and(|expected| bool::from(expected.as_slice().ct_eq(digest.as_slice())))
}

/// Whether `key` is a partner's credential (an API key or a gateway-issued token), which never opens
/// the operators' surfaces.
pub fn is_partner_credential(state: &AppState, key: &str) -> bool {
    crate::auth::source_for_key(&state.settings, key).is_some()
        || state.issuer.source_of(&state.settings, key).is_some()
}

impl FromRequest for Admin {
    type Error = GatewayError;
    type Future = Ready<Result<Admin, GatewayError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}
