//! OAuth 2.0 error answers for the token endpoint (RFC 6749 §5.2): `{"error", "error_description"}` as
//! `application/json`, never cached. The token endpoint speaks OAuth, not FHIR, so these are not
//! OperationOutcomes.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;
use std::fmt;

/// The `error` codes of RFC 6749 §5.2, plus `temporarily_unavailable` for the gateway's own outages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthErrorCode {
    /// A parameter is missing, repeated or malformed, or the body is not a form.
    InvalidRequest,
    /// The client could not be authenticated: unknown client, bad assertion, unsupported method.
    InvalidClient,
    /// The grant is not valid.
    InvalidGrant,
    /// The scope is malformed, unknown, or not one this client may have.
    InvalidScope,
    /// The client may not use this grant type.
    UnauthorizedClient,
    /// The grant type is not `client_credentials`.
    UnsupportedGrantType,
    /// The gateway cannot serve the request right now (its store is down): 503.
    TemporarilyUnavailable,
    /// Too many token requests from this client address (RFC 8628's `slow_down`): 429.
    SlowDown,
}

impl OAuthErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::InvalidGrant => "invalid_grant",
            OAuthErrorCode::InvalidScope => "invalid_scope",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            OAuthErrorCode::SlowDown => "slow_down",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            OAuthErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            OAuthErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            OAuthErrorCode::SlowDown => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A refused token request: the code and a description safe to show (no assertion, key or secret).
#[derive(Debug, Clone)]
pub struct OAuthError {
    pub code: OAuthErrorCode,
    pub description: String,
    /// Seconds to wait, for `slow_down`.
    pub retry_after: Option<u64>,
}

impl OAuthError {
    pub fn new(code: OAuthErrorCode, description: impl Into<String>) -> Self {
        OAuthError {
            code,
            description: description.into(),
            retry_after: None,
        }
    }

    /// Too many token requests from one address: wait `secs`.
    pub fn slow_down(secs: u64) -> Self {
        OAuthError {
            retry_after: Some(secs.max(1)),
            ..Self::new(
                OAuthErrorCode::SlowDown,
                format!(
                    "Too many token requests from this address; retry after {} s.",
                    secs.max(1)
                ),
            )
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidRequest, description)
    }

    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidClient, description)
    }

    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidScope, description)
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)
    }
}

impl From<crate::store::StoreError> for OAuthError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(message = "Job store failure at the token endpoint.", error = %e);
        OAuthError::new(
            OAuthErrorCode::TemporarilyUnavailable,
            "The gateway's store is unavailable; try again shortly.",
        )
    }
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        // Kept in the message log as e.g. `oauth-invalid-client`, beside the FHIR routes' codes.
        crate::observe::context::set_error_code(match self.code {
            OAuthErrorCode::InvalidRequest => "oauth-invalid-request",
            OAuthErrorCode::InvalidClient => "oauth-invalid-client",
            OAuthErrorCode::InvalidGrant => "oauth-invalid-grant",
            OAuthErrorCode::InvalidScope => "oauth-invalid-scope",
            OAuthErrorCode::UnauthorizedClient => "oauth-unauthorized-client",
            OAuthErrorCode::UnsupportedGrantType => "oauth-unsupported-grant-type",
            OAuthErrorCode::TemporarilyUnavailable => "oauth-temporarily-unavailable",
            OAuthErrorCode::SlowDown => "oauth-slow-down",
        });
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((CONTENT_TYPE, "application/json"))
            .insert_header((CACHE_CONTROL, "no-store"))
            .insert_header((PRAGMA, "no-cache"));
        if let Some(secs) = self.retry_after {
            res.insert_header(("Retry-After", secs.to_string()));
        } else if self.status_code() == StatusCode::SERVICE_UNAVAILABLE {
            res.insert_header(("Retry-After", "5"));
        }
        res.body(
            json!({"error": self.code.as_str(), "error_description": self.description}).to_string(),
        )
    }
}
