//! `GatewayError`: what went wrong, in domain terms (service, auth and connectors say it this way). Nothing here knows HTTP; the one table
//! that gives each error its status, stable code and OperationOutcome is `api::error`.

use crate::connectors::UpstreamError;
use crate::domain::Issue;
use std::fmt;
use uuid::Uuid;

/// Everything that can go wrong for a partner's request, in domain terms. Each variant's HTTP status,
/// stable code and OperationOutcome are in one table, `api::error`.
#[derive(Debug)]
pub enum GatewayError {
    /// The request is wrong.
    Invalid(Vec<Issue>),
    /// No such destination, environment, job or route.
    NotFound(String),
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The body is larger than allowed.
    PayloadTooLarge(usize),
    /// The body is not JSON by its Content-Type.
    UnsupportedMediaType,
    /// The partner asked for a representation the gateway does not produce.
    NotAcceptable,
    /// The request clashes with one already made.
    Conflict(String),
    /// The same kick-off is being sent to the EHR right now.
    KickoffInFlight,
    /// The same kick-off was being sent when the gateway stopped: the EHR may already have accepted
    /// it. A new attempt only on `Prefer: retry-unknown-kickoff`.
    KickoffUnknown,
    /// The client was too slow sending its request.
    RequestTimeout,
    /// No credentials, or not in a form the gateway reads.
    Unauthorized(String),
    /// A credential that is not valid (unknown key, expired or forged token; RFC 6750's
    /// `invalid_token`).
    InvalidToken(String),
    /// Authenticated, but not allowed.
    Forbidden(Issue),
    /// The caller sent too many requests.
    RateLimited(u64),
    /// The EHR said no, or could not be used.
    Upstream(UpstreamError),
    /// The job store could not be reached.
    StoreUnavailable,
    /// A file URL or redirect the gateway will not follow (host not allowed, private address).
    FileRefused(String),
    /// The partner's Range cannot be served.
    RangeNotSatisfiable,
    /// A bug; the cause is logged, never shown.
    Internal(String),
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl From<crate::store::StoreError> for GatewayError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(message = "Job store failure.", error = %e);
        GatewayError::StoreUnavailable
    }
}

impl From<UpstreamError> for GatewayError {
    fn from(e: UpstreamError) -> Self {
        GatewayError::Upstream(e)
    }
}

/// A `GatewayError` with the Log ID of the request it answers, echoed as `X-Request-ID`.
#[derive(Debug)]
pub struct Failure {
    pub error: GatewayError,
    pub log_id: Option<Uuid>,
}

impl Failure {
    pub fn new(error: GatewayError, log_id: Option<Uuid>) -> Self {
        Failure { error, log_id }
    }
}

impl From<GatewayError> for Failure {
    fn from(error: GatewayError) -> Self {
        Failure {
            error,
            log_id: None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}
