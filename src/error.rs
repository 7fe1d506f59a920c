//! `ApiError`: the one place that maps failures to HTTP statuses and renders them as OperationOutcomes.

use crate::connectors::UpstreamError;
use crate::domain::{Issue, IssueCode};
use crate::fhir::OperationOutcome;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use std::fmt;
use uuid::Uuid;

/// The FHIR JSON media type of every error body.
pub const FHIR_JSON: &str = "application/fhir+json";

/// Everything a partner can be told went wrong.
#[derive(Debug)]
pub enum ApiError {
    /// The request is wrong: 400 with one issue per problem.
    Invalid(Vec<Issue>),
    /// No such destination, environment, job or route: 404.
    NotFound(String),
    /// The route exists but not for this method: 405.
    MethodNotAllowed,
    /// The body is larger than allowed: 413.
    PayloadTooLarge(usize),
    /// The body is not JSON by its Content-Type: 415.
    UnsupportedMediaType,
    /// The partner asked for a representation the gateway does not produce: 406.
    NotAcceptable,
    /// The request clashes with one already made: 409.
    Conflict(String),
    /// The same kick-off is being sent to the EHR right now: 409 with a short `Retry-After`.
    KickoffInFlight,
    /// The same kick-off was being sent when the gateway stopped: the EHR may already have accepted
    /// it. 409; a new attempt only on `Prefer: retry-unknown-kickoff`.
    KickoffUnknown,
    /// The client was too slow sending its request: 408.
    RequestTimeout,
    /// No credentials, or not in a form the gateway reads: 401 with `WWW-Authenticate: Bearer`.
    Unauthorized(String),
    /// A credential that is not valid (unknown key, expired or forged token): 401 with
    /// `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750 §3.1).
    InvalidToken(String),
    /// Authenticated, but not allowed: 403.
    Forbidden(Issue),
    /// The caller sent too many requests: 429 with a Retry-After in seconds.
    RateLimited(u64),
    /// The EHR said no, or could not be used.
    Upstream(UpstreamError),
    /// The job store could not be reached: 503.
    StoreUnavailable,
    /// A file URL or redirect the gateway will not follow (host not allowed, private address): 502.
    FileRefused(String),
    /// The partner's Range cannot be served: 416.
    RangeNotSatisfiable,
    /// A bug; the cause is logged, never shown.
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            ApiError::Conflict(_) | ApiError::KickoffInFlight | ApiError::KickoffUnknown => {
                StatusCode::CONFLICT
            }
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized(_) | ApiError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Upstream(e) => match e {
                UpstreamError::Rejected { status, .. } => {
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
                }
                UpstreamError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
                UpstreamError::Timeout => StatusCode::GATEWAY_TIMEOUT,
                UpstreamError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                UpstreamError::ServerError { .. }
                | UpstreamError::Unreachable
                | UpstreamError::BadAnswer(_)
                | UpstreamError::CredentialsRefused(_) => StatusCode::BAD_GATEWAY,
            },
            ApiError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::FileRefused(_) => StatusCode::BAD_GATEWAY,
            ApiError::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The issues the partner sees.
    pub fn issues(&self) -> Vec<Issue> {
        match self {
            ApiError::Invalid(issues) => issues.clone(),
            ApiError::NotFound(what) => vec![Issue::general(IssueCode::NotFound, what.clone())],
            ApiError::MethodNotAllowed => vec![Issue::general(
                IssueCode::NotSupported,
                "This route does not accept that HTTP method.",
            )],
            ApiError::PayloadTooLarge(limit) => vec![Issue::general(
                IssueCode::TooLong,
                format!("The request body is larger than {limit} bytes."),
            )],
            ApiError::UnsupportedMediaType => vec![Issue::at(
                IssueCode::NotSupported,
                "Content-Type",
                "The body must be JSON: send Content-Type: application/json or application/fhir+json.",
            )],
            ApiError::NotAcceptable => vec![Issue::at(
                IssueCode::NotSupported,
                "Accept",
                "The gateway answers in application/fhir+json or application/json.",
            )],
            ApiError::Conflict(why) => vec![Issue::general(IssueCode::Conflict, why.clone())],
            ApiError::KickoffInFlight => vec![Issue::general(
                IssueCode::Conflict,
                "A kick-off with this Log ID is being sent to the EHR right now; retry after the time in Retry-After.",
            )],
            ApiError::KickoffUnknown => vec![Issue::general(
                IssueCode::Conflict,
                "The gateway stopped while the EHR was answering an earlier attempt of this kick-off, so the EHR may already have accepted the export. Nothing was sent again. To send the kick-off anyway, repeat it with the header Prefer: retry-unknown-kickoff; or send it under a new Log ID.",
            )],
            ApiError::RequestTimeout => vec![Issue::general(
                IssueCode::Timeout,
                "The request body did not arrive in time.",
            )],
            ApiError::Unauthorized(why) | ApiError::InvalidToken(why) => {
                vec![Issue::general(IssueCode::Security, why.clone())]
            }
            ApiError::Forbidden(issue) => vec![issue.clone()],
            ApiError::RateLimited(_) => vec![Issue::general(
                IssueCode::Throttled,
                "Too many requests from this source; retry after the time in Retry-After.",
            )],
            ApiError::Upstream(e) => match e {
                UpstreamError::Rejected { issues, .. } => issues.clone(),
                UpstreamError::Throttled { issues, .. } => {
                    let mut all = vec![Issue::general(
                        IssueCode::Throttled,
                        "The EHR is throttling requests; retry after the time in Retry-After.",
                    )];
                    all.extend(issues.iter().cloned());
                    all
                }
                UpstreamError::ServerError { status } => vec![Issue::general(
                    IssueCode::Transient,
                    format!("The EHR failed with HTTP {status}; try again later."),
                )],
                UpstreamError::Unavailable { .. } => vec![Issue::general(
                    IssueCode::Transient,
                    "The EHR is unavailable for now; retry after the time in Retry-After.",
                )],
                UpstreamError::Timeout => vec![Issue::general(
                    IssueCode::Timeout,
                    "The EHR did not answer in time; try again later.",
                )],
                UpstreamError::Unreachable => vec![Issue::general(
                    IssueCode::Transient,
                    "The EHR could not be reached; try again later.",
                )],
                UpstreamError::CredentialsRefused(_) => vec![Issue::general(
                    IssueCode::Security,
                    "The EHR refused the gateway's own credentials; the gateway's operators can find the details in its log under this request's Log ID.",
                )],
                UpstreamError::BadAnswer(why) => vec![Issue::general(
                    IssueCode::Exception,
                    format!("The EHR's answer could not be used: {why}."),
                )],
            },
            ApiError::StoreUnavailable => vec![Issue::general(
                IssueCode::Transient,
                "The gateway's job store is unavailable; try again shortly.",
            )],
            ApiError::FileRefused(why) => vec![Issue::general(
                IssueCode::Security,
                format!(
                    "The gateway refused to fetch this file from where the EHR sent it: {why}."
                ),
            )],
            ApiError::RangeNotSatisfiable => vec![Issue::at(
                IssueCode::Value,
                "Range",
                "The requested byte range is outside the file.",
            )],
            ApiError::Internal(_) => vec![Issue::general(
                IssueCode::Exception,
                "The gateway failed unexpectedly; the log has the details under this request's Log ID.",
            )],
        }
    }

    /// A short stable code for logs and the job store.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid(_) => "invalid",
            ApiError::NotFound(_) => "not-found",
            ApiError::MethodNotAllowed => "method-not-allowed",
            ApiError::PayloadTooLarge(_) => "too-large",
            ApiError::UnsupportedMediaType => "unsupported-media-type",
            ApiError::NotAcceptable => "not-acceptable",
            ApiError::Conflict(_) => "conflict",
            ApiError::KickoffInFlight => "kickoff-in-flight",
            ApiError::KickoffUnknown => "kickoff-unknown",
            ApiError::RequestTimeout => "request-timeout",
            ApiError::Unauthorized(_) | ApiError::InvalidToken(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::RateLimited(_) => "rate-limited",
            ApiError::Upstream(e) => match e {
                UpstreamError::Rejected { .. } => "upstream-rejected",
                UpstreamError::Throttled { .. } => "upstream-throttled",
                UpstreamError::ServerError { .. } => "upstream-server-error",
                UpstreamError::Timeout => "upstream-timeout",
                UpstreamError::Unavailable { .. } => "upstream-unavailable",
                UpstreamError::Unreachable => "upstream-unreachable",
                UpstreamError::BadAnswer(_) => "upstream-bad-answer",
                UpstreamError::CredentialsRefused(_) => "upstream-credentials-refused",
            },
            ApiError::StoreUnavailable => "store-unavailable",
            ApiError::FileRefused(_) => "file-refused",
            ApiError::RangeNotSatisfiable => "range-not-satisfiable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.status())
    }
}

impl From<crate::jobs::StoreError> for ApiError {
    fn from(e: crate::jobs::StoreError) -> Self {
        tracing::error!(message = "Job store failure.", error = %e);
        ApiError::StoreUnavailable
    }
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        ApiError::Upstream(e)
    }
}

/// An `ApiError` with the Log ID of the request it answers, echoed as `X-Request-ID`.
#[derive(Debug)]
pub struct Failure {
    pub error: ApiError,
    pub log_id: Option<Uuid>,
}

impl Failure {
    pub fn new(error: ApiError, log_id: Option<Uuid>) -> Self {
        Failure { error, log_id }
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
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

/// Renders an error as the partner sees it.
pub fn render(error: &ApiError, log_id: Option<Uuid>) -> HttpResponse {
    crate::observe::context::set_error_code(error.code());
    let mut builder = HttpResponse::build(error.status());
    builder.insert_header((CONTENT_TYPE, FHIR_JSON));
    if let Some(id) = log_id {
        builder.insert_header(("X-Request-ID", id.to_string()));
    }
    match error {
        ApiError::Upstream(UpstreamError::Throttled {
            retry_after: Some(secs),
            ..
        })
        | ApiError::Upstream(UpstreamError::Unavailable { retry_after: secs })
        | ApiError::RateLimited(secs) => {
            builder.insert_header((RETRY_AFTER, secs.to_string()));
        }
        ApiError::KickoffInFlight => {
            builder.insert_header((RETRY_AFTER, "2"));
        }
        ApiError::Unauthorized(_) => {
            builder.insert_header(("WWW-Authenticate", "Bearer"));
        }
        ApiError::InvalidToken(_) => {
            builder.insert_header(("WWW-Authenticate", r#"Bearer error="invalid_token""#));
        }
        _ => {}
    }
    if let ApiError::Internal(cause) = error {
        tracing::error!(message = "Internal error.", cause = %cause, log_id = ?log_id);
    }
    builder.json(OperationOutcome::from_issues(&error.issues()))
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        render(self, None)
    }
}

impl ResponseError for Failure {
    fn status_code(&self) -> StatusCode {
        self.error.status()
    }

    fn error_response(&self) -> HttpResponse {
        render(&self.error, self.log_id)
    }
}
