//! The one error table: each `GatewayError`'s HTTP status, stable code and the issues the partner sees,
//! and how an error is rendered (a FHIR OperationOutcome, `X-Request-ID`, `Retry-After`,
//! `WWW-Authenticate`). A new error is one new row here.

use crate::connectors::UpstreamError;
use crate::domain::{Issue, IssueCode};
pub use crate::error::{Failure, GatewayError};
use crate::fhir::OperationOutcome;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use uuid::Uuid;

/// The FHIR JSON media type of every error body.
pub const FHIR_JSON: &str = "application/fhir+json";

/// One row of the table.
struct Row {
    status: StatusCode,
    code: &'static str,
    issues: Vec<Issue>,
}

fn row(status: StatusCode, code: &'static str, issues: Vec<Issue>) -> Row {
    Row {
        status,
        code,
        issues,
    }
}

fn one(code: IssueCode, diagnostics: impl Into<String>) -> Vec<Issue> {
    vec![Issue::general(code, diagnostics)]
}

impl GatewayError {
    /// The table: status, stable code (logs, the job store, the message log) and the issues the
    /// partner sees, for every error.
    fn row(&self) -> Row {
        use GatewayError as E;
        use StatusCode as S;
        match self {
            E::Invalid(issues) => row(S::BAD_REQUEST, "invalid", issues.clone()),
            E::NotFound(what) => row(
                S::NOT_FOUND,
                "not-found",
                one(IssueCode::NotFound, what.clone()),
            ),
            E::MethodNotAllowed => row(
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                one(
                    IssueCode::NotSupported,
                    "This route does not accept that HTTP method.",
                ),
            ),
            E::PayloadTooLarge(limit) => row(
                S::PAYLOAD_TOO_LARGE,
                "too-large",
                one(
                    IssueCode::TooLong,
                    format!("The request body is larger than {limit} bytes."),
                ),
            ),
            E::UnsupportedMediaType => row(
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                vec![Issue::at(
                    IssueCode::NotSupported,
                    "Content-Type",
                    "The body must be JSON: send Content-Type: application/json or application/fhir+json.",
                )],
            ),
            E::NotAcceptable => row(
                S::NOT_ACCEPTABLE,
                "not-acceptable",
                vec![Issue::at(
                    IssueCode::NotSupported,
                    "Accept",
                    "The gateway answers in application/fhir+json or application/json.",
                )],
            ),
            E::Conflict(why) => row(
                S::CONFLICT,
                "conflict",
                one(IssueCode::Conflict, why.clone()),
            ),
            E::KickoffInFlight => row(
                S::CONFLICT,
                "kickoff-in-flight",
                one(
                    IssueCode::Conflict,
                    "A kick-off with this Log ID is being sent to the EHR right now; retry after the time in Retry-After.",
                ),
            ),
            E::KickoffUnknown => row(
                S::CONFLICT,
                "kickoff-unknown",
                one(
                    IssueCode::Conflict,
                    "The gateway stopped while the EHR was answering an earlier attempt of this kick-off, so the EHR may already have accepted the export. Nothing was sent again. To send the kick-off anyway, repeat it with the header Prefer: retry-unknown-kickoff; or send it under a new Log ID.",
                ),
            ),
            E::RequestTimeout => row(
                S::REQUEST_TIMEOUT,
                "request-timeout",
                one(
                    IssueCode::Timeout,
                    "The request body did not arrive in time.",
                ),
            ),
            E::Unauthorized(why) | E::InvalidToken(why) => row(
                S::UNAUTHORIZED,
                "unauthorized",
                one(IssueCode::Security, why.clone()),
            ),
            E::Forbidden(issue) => row(S::FORBIDDEN, "forbidden", vec![issue.clone()]),
            E::RateLimited(_) => row(
                S::TOO_MANY_REQUESTS,
                "rate-limited",
                one(
                    IssueCode::Throttled,
                    "Too many requests from this source; retry after the time in Retry-After.",
                ),
            ),
            E::Upstream(e) => upstream_row(e),
            E::StoreUnavailable => row(
                S::SERVICE_UNAVAILABLE,
                "store-unavailable",
                one(
                    IssueCode::Transient,
                    "The gateway's job store is unavailable; try again shortly.",
                ),
            ),
            E::FileRefused(why) => row(
                S::BAD_GATEWAY,
                "file-refused",
                one(
                    IssueCode::Security,
                    format!(
                        "The gateway refused to fetch this file from where the EHR sent it: {why}."
                    ),
                ),
            ),
            E::RangeNotSatisfiable => row(
                S::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                vec![Issue::at(
                    IssueCode::Value,
                    "Range",
                    "The requested byte range is outside the file.",
                )],
            ),
            E::Internal(_) => row(
                S::INTERNAL_SERVER_ERROR,
                "internal",
                one(
                    IssueCode::Exception,
                    "The gateway failed unexpectedly; the log has the details under this request's Log ID.",
                ),
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.row().status
    }

    /// The issues the partner sees.
    pub fn issues(&self) -> Vec<Issue> {
        self.row().issues
    }

    /// A short stable code for logs and the job store.
    pub fn code(&self) -> &'static str {
        self.row().code
    }
}

/// The rows for what the EHR did.
fn upstream_row(e: &UpstreamError) -> Row {
    use StatusCode as S;
    match e {
        UpstreamError::Rejected { status, issues } => row(
            S::from_u16(*status).unwrap_or(S::BAD_REQUEST),
            "upstream-rejected",
            issues.clone(),
        ),
        UpstreamError::Throttled { issues, .. } => {
            let mut all = one(
                IssueCode::Throttled,
                "The EHR is throttling requests; retry after the time in Retry-After.",
            );
            all.extend(issues.iter().cloned());
            row(S::TOO_MANY_REQUESTS, "upstream-throttled", all)
        }
        UpstreamError::ServerError { status } => row(
            S::BAD_GATEWAY,
            "upstream-server-error",
            one(
                IssueCode::Transient,
                format!("The EHR failed with HTTP {status}; try again later."),
            ),
        ),
        UpstreamError::Unavailable { .. } => row(
            S::SERVICE_UNAVAILABLE,
            "upstream-unavailable",
            one(
                IssueCode::Transient,
                "The EHR is unavailable for now; retry after the time in Retry-After.",
            ),
        ),
        UpstreamError::Timeout => row(
            S::GATEWAY_TIMEOUT,
            "upstream-timeout",
            one(
                IssueCode::Timeout,
                "The EHR did not answer in time; try again later.",
            ),
        ),
        UpstreamError::Unreachable => row(
            S::BAD_GATEWAY,
            "upstream-unreachable",
            one(
                IssueCode::Transient,
                "The EHR could not be reached; try again later.",
            ),
        ),
        UpstreamError::CredentialsRefused(_) => row(
            S::BAD_GATEWAY,
            "upstream-credentials-refused",
            one(
                IssueCode::Security,
                "The EHR refused the gateway's own credentials; the gateway's operators can find the details in its log under this request's Log ID.",
            ),
        ),
        UpstreamError::BadAnswer(why) => row(
            S::BAD_GATEWAY,
            "upstream-bad-answer",
            one(
                IssueCode::Exception,
                format!("The EHR's answer could not be used: {why}."),
            ),
        ),
    }
}

/// Renders an error as the partner sees it.
pub fn render(error: &GatewayError, log_id: Option<Uuid>) -> HttpResponse {
    crate::observe::context::set_error_code(error.code());
    let mut builder = HttpResponse::build(error.status());
    builder.insert_header((CONTENT_TYPE, FHIR_JSON));
    if let Some(id) = log_id {
        builder.insert_header(("X-Request-ID", id.to_string()));
    }
    match error {
        GatewayError::Upstream(UpstreamError::Throttled {
            retry_after: Some(secs),
            ..
        })
        | GatewayError::Upstream(UpstreamError::Unavailable { retry_after: secs })
        | GatewayError::RateLimited(secs) => {
            builder.insert_header((RETRY_AFTER, secs.to_string()));
        }
        GatewayError::KickoffInFlight => {
            builder.insert_header((RETRY_AFTER, "2"));
        }
        GatewayError::Unauthorized(_) => {
            builder.insert_header(("WWW-Authenticate", "Bearer"));
        }
        GatewayError::InvalidToken(_) => {
            builder.insert_header(("WWW-Authenticate", r#"Bearer error="invalid_token""#));
        }
        _ => {}
    }
    if let GatewayError::Internal(cause) = error {
        tracing::error!(message = "Internal error.", cause = %cause, log_id = ?log_id);
    }
    builder.json(OperationOutcome::from_issues(&error.issues()))
}

impl ResponseError for GatewayError {
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
