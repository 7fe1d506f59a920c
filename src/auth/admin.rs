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
    let digest = Sha256::digest(key.as_bytes());
    let admin_ok = state
        .settings
        .admin
        .api_key_sha256
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .is_some_and(|expected| bool::from(expected.as_slice().ct_eq(digest.as_slice())));
    if admin_ok {
        return Ok(Admin);
    }
    let partner = crate::auth::source_for_key(&state.settings, key).is_some()
        || state.issuer.source_of(&state.settings, key).is_some();
    if partner {
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

impl FromRequest for Admin {
    type Error = GatewayError;
    type Future = Ready<Result<Admin, GatewayError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}
