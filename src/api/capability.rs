//! `GET /fhir/R4/{slug}/{env}/metadata`: what this destination supports, as a CapabilityStatement.
//! Public, as a FHIR server's is: clients read it to learn how to authenticate.

use crate::api::error::{FHIR_JSON, GatewayError};
use crate::auth::auth_required;
use crate::auth::issuer::TokenIssuer;
use crate::envelope::now_millis;
use crate::fhir::capability::capability_statement;
use crate::state::AppState;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{HttpRequest, HttpResponse, web};

pub async fn metadata(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let info = req.match_info();
    let (slug, env) = (
        info.get("slug").unwrap_or_default(),
        info.get("env").unwrap_or_default(),
    );
    let connector = state.registry.get(slug, env).ok_or_else(|| {
        GatewayError::NotFound(format!(
            "No destination '{}' is configured for environment '{}'.",
            crate::domain::shorten(slug),
            crate::domain::shorten(env)
        ))
    })?;
    let base = state.fhir_base(connector.slug.as_str(), connector.environment);
    let token_url = auth_required(&state.settings).then(|| TokenIssuer::token_url(&state.settings));
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, FHIR_JSON))
        .json(capability_statement(
            &connector,
            &base,
            &now_millis(),
            token_url.as_deref(),
        )))
}
