//! Thin actix handlers: extract, call one function, map the result.

pub mod admin;
pub mod capability;
pub mod error;
pub mod files;
pub mod health;
pub mod kickoff;
pub mod openapi;
pub mod status;
pub mod token;

use crate::error::GatewayError;
use actix_web::http::header::{ACCEPT, CONTENT_LENGTH};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde::Deserialize;

/// `/fhir/R4/{slug}/{env}`: which destination and environment (checked against the registry by the
/// service, so an unknown one is the same 404 whatever the route).
#[derive(Debug, Deserialize)]
pub struct DestinationPath {
    pub slug: String,
    pub env: String,
}

/// `…/export-status/{job_id}`.
#[derive(Debug, Deserialize)]
pub struct JobPath {
    pub slug: String,
    pub env: String,
    pub job_id: String,
}

/// `…/export-file/{job_id}/{file_id}`.
#[derive(Debug, Deserialize)]
pub struct FilePath {
    pub slug: String,
    pub env: String,
    pub job_id: String,
    pub file_id: String,
}

/// `…/export-attachment/{job_id}/{link}`.
#[derive(Debug, Deserialize)]
pub struct AttachmentPath {
    pub slug: String,
    pub env: String,
    pub job_id: String,
    pub link: String,
}

/// `…/export-manifest/{job_id}/{page}`.
#[derive(Debug, Deserialize)]
pub struct PagePath {
    pub slug: String,
    pub env: String,
    pub job_id: String,
    pub page: String,
}

/// `…/Group/{group_id}/$export`.
#[derive(Debug, Deserialize)]
pub struct GroupPath {
    pub slug: String,
    pub env: String,
    pub group_id: String,
}

/// A path segment that cannot be read (not UTF-8 once decoded) names no resource: 404, as an
/// OperationOutcome like every other error.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_, _| {
        GatewayError::NotFound("No such route on this gateway.".into()).into()
    })
}

/// Reads the body up to `body_limit_bytes` (413 beyond, before reading more) within `body_timeout_secs`
/// (408 after, so a slow client cannot hold a worker).
pub async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    server: &crate::config::ServerSettings,
) -> Result<Vec<u8>, GatewayError> {
    let timeout = std::time::Duration::from_secs_f64(server.body_timeout_secs);
    tokio::time::timeout(
        timeout,
        read_body_within(req, payload, server.body_limit_bytes),
    )
    .await
    .map_err(|_| GatewayError::RequestTimeout)?
}

async fn read_body_within(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, GatewayError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::PayloadTooLarge(limit));
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            GatewayError::Invalid(vec![crate::domain::Issue::general(
                crate::domain::IssueCode::Structure,
                "The request body could not be read.",
            )])
        })?;
        if body.len() + chunk.len() > limit {
            return Err(GatewayError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// 406 unless the partner accepts JSON (or sent no Accept at all).
pub fn require_json_accept(req: &HttpRequest) -> Result<(), GatewayError> {
    let Some(accept) = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let ok = accept.split(',').any(|range| {
        let t = range
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        t.is_empty() || t == "*/*" || t == "application/*" || t.ends_with("json")
    });
    if ok {
        Ok(())
    } else {
        Err(GatewayError::NotAcceptable)
    }
}

/// Any path no route matches.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let _ = req;
    crate::api::error::render(
        &GatewayError::NotFound("No such route on this gateway.".into()),
        None,
    )
}

/// A known path with a method it does not take.
pub async fn method_not_allowed() -> HttpResponse {
    crate::api::error::render(&GatewayError::MethodNotAllowed, None)
}
