//! `POST /auth/token` and `GET …/.well-known/smart-configuration`: how standard clients get a token.

use crate::error::{ApiError, Failure};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use serde_json::json;
use std::collections::HashMap;

pub async fn token(body: web::Bytes, state: web::Data<AppState>) -> Result<HttpResponse, Failure> {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let (token, source) = state
        .issuer
        .exchange(&state.settings, state.store.as_ref(), &form)
        .await?;
    tracing::info!(message = "Access token issued.", source = %source.id);
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({
            "access_token": token.expose(),
            "token_type": "bearer",
            "expires_in": crate::auth_token::ACCESS_TOKEN_SECS,
            "scope": form.get("scope").cloned().unwrap_or_else(|| "system/*.read".to_owned()),
        })))
}

pub async fn smart_configuration(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let base = state
        .settings
        .server
        .public_url
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    Ok(HttpResponse::Ok().json(json!({
        "token_endpoint": format!("{base}/auth/token"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": ["system/*.read"],
        "capabilities": ["client-confidential-asymmetric"],
    })))
}
