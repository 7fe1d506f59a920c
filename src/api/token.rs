//! `POST /auth/token` and `GET …/.well-known/smart-configuration`: how standard clients get a token.
//! The token endpoint answers in OAuth 2.0's own format (RFC 6749 §5), errors included.

use super::read_body;
use crate::auth::issuer::{ACCESS_TOKEN_SECS, TokenForm, TokenIssuer};
use crate::auth::oauth::OAuthError;
use crate::error::GatewayError;
use crate::state::AppState;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

/// The scope grammars the gateway understands, as listed in its smart-configuration.
pub const SCOPES_SUPPORTED: [&str; 2] = ["system/*.read", "system/*.rs"];

pub async fn token(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    // Anonymous callers can make the gateway verify signatures and fetch key sets: each address gets
    // `[auth] token_rate_limit_per_minute`.
    if let Some(peer) = req.peer_addr() {
        state
            .limits
            .check_token(peer.ip())
            .map_err(OAuthError::slow_down)?;
    }
    let form_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if form_type.as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "The token request must be a form: Content-Type: application/x-www-form-urlencoded.",
        ));
    }
    let body = read_body(&req, body, &state.settings.server)
        .await
        .map_err(|e| match e {
            GatewayError::PayloadTooLarge(limit) => OAuthError::invalid_request(format!(
                "The token request is larger than {limit} bytes."
            )),
            _ => OAuthError::invalid_request("The token request's body could not be read."),
        })?;
    let form = TokenForm::parse(&body)?;
    let issued = state
        .issuer
        .exchange(&state.settings, state.store.as_ref(), &form)
        .await
        .inspect_err(|e| {
            tracing::info!(message = "Token request refused.", error = e.code.as_str());
        })?;
    crate::observe::context::set_source(&issued.source.id.to_string());
    tracing::info!(message = "Access token issued.", source = %issued.source.id, scope = %issued.scopes);
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .insert_header((PRAGMA, "no-cache"))
        .json(json!({
            "access_token": issued.token.expose(),
            "token_type": "bearer",
            "expires_in": ACCESS_TOKEN_SECS,
            "scope": issued.scopes.to_string(),
        })))
}

pub async fn smart_configuration(state: web::Data<AppState>) -> Result<HttpResponse, GatewayError> {
    let config = json!({
        "token_endpoint": TokenIssuer::token_url(&state.settings),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    });
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-cache"))
        .json(config))
}
