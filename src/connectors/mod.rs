//! Connectors: one per (destination, environment), each a vendor profile's capability table plus the
//! few behaviours that really differ, over one shared HTTP client.

pub mod capabilities;
pub mod discovery;
pub mod files;
pub mod http;
pub mod plan;
pub mod registry;
pub mod request;
pub mod smart;
pub mod vendors;

use crate::domain::Vendor;
use crate::domain::secret::Secret;
use crate::domain::{DestinationSlug, EnvironmentFlag, ExportKickoff, Issue, IssueCode};
use crate::fhir::OperationOutcome;
use capabilities::Capabilities;
use chrono::Utc;
use http::{Resend, TransportError, UpstreamAnswer, UpstreamClient, retry_after_secs};
use plan::{KickoffPlan, plan_kickoff};
use request::{UpstreamRequest, kickoff_request};
use std::sync::Arc;
use url::Url;
use uuid::Uuid;

/// The capability table a vendor profile starts from.
pub fn profile_capabilities(vendor: Vendor) -> Capabilities {
    (vendors::profile(vendor).capabilities)()
}

/// What went wrong upstream, in terms the HTTP layer maps to a status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// A 4xx answer with the EHR's issues, passed on with its status.
    #[error("the EHR refused the request with HTTP {status}")]
    Rejected { status: u16, issues: Vec<Issue> },
    /// A 429, with the wait the EHR asked for.
    #[error("the EHR is throttling requests")]
    Throttled {
        retry_after: Option<u64>,
        issues: Vec<Issue>,
    },
    /// A 5xx.
    #[error("the EHR failed with HTTP {status}")]
    ServerError { status: u16 },
    /// A 503 with a `Retry-After` (capped): the EHR says when to come back.
    #[error("the EHR is unavailable for now")]
    Unavailable { retry_after: u64 },
    #[error("the EHR did not answer in time")]
    Timeout,
    #[error("the EHR could not be reached")]
    Unreachable,
    /// An answer the gateway cannot use (no Content-Location, not JSON, an unexpected status).
    #[error("the EHR's answer was unusable: {0}")]
    BadAnswer(String),
    /// The EHR refused the gateway's own credentials (its token endpoint, or a 401/403 to an API call).
    #[error("the EHR refused the gateway's credentials: {0}")]
    CredentialsRefused(String),
}

/// How the gateway authenticates to one upstream.
#[derive(Debug, Clone)]
pub enum UpstreamAuth {
    None,
    /// A static bearer token from the configuration's secret source.
    Bearer(Secret),
    /// SMART Backend Services: tokens from a signed client assertion, cached.
    Smart(Arc<smart::SmartClient>),
}

impl From<TransportError> for UpstreamError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Timeout => UpstreamError::Timeout,
            TransportError::Unreachable => UpstreamError::Unreachable,
            TransportError::TooLarge => UpstreamError::BadAnswer("the answer was too large".into()),
            TransportError::Build(m) => {
                UpstreamError::BadAnswer(format!("the request could not be built ({m})"))
            }
            TransportError::NotPublic => UpstreamError::BadAnswer(
                "the EHR's address is not public, and this destination does not allow private addresses".into(),
            ),
        }
    }
}

/// The EHR's own issues, prefixed so the partner knows who said them.
fn upstream_issues(answer: &UpstreamAnswer) -> Result<Vec<Issue>, UpstreamError> {
    let prefix = |d: &str| format!("The EHR answered HTTP {}: {d}", answer.status);
    if answer.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(vec![Issue::general(
            IssueCode::from_wire(default_code(answer.status)),
            prefix("(no details given)"),
        )]);
    }
    let value: serde_json::Value = serde_json::from_slice(&answer.body).map_err(|_| {
        UpstreamError::BadAnswer(format!(
            "HTTP {} with a body that is not JSON",
            answer.status
        ))
    })?;
    match serde_json::from_value::<OperationOutcome>(value) {
        Ok(oo) if oo.resource_type == "OperationOutcome" && !oo.issue.is_empty() => Ok(oo
            .issue
            .iter()
            .map(|i| i.to_issue(|d| prefix(d.unwrap_or("(no diagnostics)"))))
            .collect()),
        _ => Ok(vec![Issue::general(
            IssueCode::from_wire(default_code(answer.status)),
            prefix("(not an OperationOutcome)"),
        )]),
    }
}

fn default_code(status: u16) -> &'static str {
    match status {
        404 | 410 => "not-found",
        401 | 403 => "security",
        409 => "conflict",
        429 => "throttled",
        _ => "processing",
    }
}

/// One upstream: a destination in one environment.
#[derive(Debug)]
pub struct Connector {
    pub slug: DestinationSlug,
    pub environment: EnvironmentFlag,
    pub destination_id: Option<Uuid>,
    pub name: String,
    pub vendor: Vendor,
    pub base_url: Url,
    /// The vendor profile's table with the destination's `supported_parameters`.
    configured: Capabilities,
    /// What the EHR itself declared (`discover = true`), narrowing `configured`.
    discovery: std::sync::RwLock<discovery::DiscoveryStatus>,
    auth: UpstreamAuth,
    http: UpstreamClient,
    /// Hosts besides the base URL's that files may come from.
    pub file_hosts: Vec<String>,
    /// Whether upstream addresses may be loopback, private or link-local (tests only).
    pub allow_private_addresses: bool,
    /// Kick-offs in flight at once; the EHR is not flooded by one burst.
    kickoffs_in_flight: Arc<tokio::sync::Semaphore>,
    /// The poller's status requests in flight at once, under the same cap.
    polls_in_flight: Arc<tokio::sync::Semaphore>,
    /// Longest `Retry-After` adopted from this EHR (`[jobs] max_retry_after_secs`).
    pub max_retry_after_secs: u64,
    /// How often discovery runs again.
    pub discover_interval: std::time::Duration,
}

impl Connector {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        slug: DestinationSlug,
        environment: EnvironmentFlag,
        destination_id: Option<Uuid>,
        name: String,
        vendor: Vendor,
        base_url: Url,
        capabilities: Capabilities,
        auth: UpstreamAuth,
        http: UpstreamClient,
    ) -> Self {
        Connector {
            slug,
            environment,
            destination_id,
            name,
            vendor,
            base_url,
            configured: capabilities,
            discovery: std::sync::RwLock::new(discovery::DiscoveryStatus::Off),
            auth,
            http,
            file_hosts: Vec::new(),
            allow_private_addresses: false,
            kickoffs_in_flight: Arc::new(tokio::sync::Semaphore::new(64)),
            polls_in_flight: Arc::new(tokio::sync::Semaphore::new(64)),
            max_retry_after_secs: 3600,
            discover_interval: std::time::Duration::from_secs(3600),
        }
    }

    /// Turns discovery on, every `interval_secs`: the table narrows to what the EHR declares once
    /// it is read.
    pub fn with_discovery(mut self, on: bool, interval_secs: u64) -> Self {
        if on && let Ok(mut status) = self.discovery.write() {
            *status = discovery::DiscoveryStatus::Pending;
        }
        self.discover_interval = std::time::Duration::from_secs(interval_secs.max(1));
        self
    }

    /// What this destination accepts now: the configured table, narrowed by discovery when on.
    pub fn capabilities(&self) -> Capabilities {
        let status = self
            .discovery
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match status.in_force() {
            Some(found) => discovery::narrow(self.configured.clone(), found),
            None => self.configured.clone(),
        }
    }

    /// Whether discovery is on for this destination.
    pub fn discovers(&self) -> bool {
        !matches!(
            *self
                .discovery
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            discovery::DiscoveryStatus::Off
        )
    }

    /// Caps the waits adopted from this EHR's `Retry-After`.
    pub fn with_max_retry_after(mut self, secs: u64) -> Self {
        self.max_retry_after_secs = secs;
        self
    }

    /// Caps the kick-offs in flight to this upstream at once.
    pub fn with_max_concurrent_kickoffs(mut self, n: usize) -> Self {
        self.kickoffs_in_flight = Arc::new(tokio::sync::Semaphore::new(n.max(1)));
        self.polls_in_flight = Arc::new(tokio::sync::Semaphore::new(n.max(1)));
        self
    }

    /// Waits for a place among the poller's status requests to this destination.
    pub async fn poll_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.polls_in_flight.clone().acquire_owned().await.ok()
    }

    /// A place among the kick-offs in flight, or `None` when the destination is at its cap.
    pub fn kickoff_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.kickoffs_in_flight.clone().try_acquire_owned().ok()
    }

    /// Sets where files may come from besides the destination's origin.
    pub fn with_file_policy(
        mut self,
        file_hosts: Vec<String>,
        allow_private_addresses: bool,
    ) -> Self {
        self.file_hosts = file_hosts;
        self.allow_private_addresses = allow_private_addresses;
        self
    }

    /// The shared HTTP client.
    pub(crate) fn http(&self) -> &UpstreamClient {
        &self.http
    }

    /// Fits a validated kick-off to this destination (see [`plan_kickoff`]).
    pub fn plan(
        &self,
        kickoff: ExportKickoff,
        unknown: &[String],
        lenient: bool,
    ) -> Result<KickoffPlan, Vec<Issue>> {
        plan_kickoff(
            self.slug.as_str(),
            self.vendor,
            &self.capabilities(),
            kickoff,
            unknown,
            lenient,
        )
    }

    /// The request this destination's EHR accepts for `plan`.
    pub fn kickoff_request(&self, plan: &KickoffPlan, log_id: Uuid) -> UpstreamRequest {
        kickoff_request(&self.base_url, &self.capabilities(), plan, log_id)
    }

    /// Counts and times one upstream call, and adds it to the current request's message log record.
    pub(crate) fn observe(
        &self,
        operation: &str,
        started: std::time::Instant,
        status: Option<u16>,
        outcome: &str,
        headers: Option<&reqwest::header::HeaderMap>,
    ) {
        let duration = started.elapsed();
        self.http.metrics().upstream(
            self.slug.as_str(),
            self.environment.as_str(),
            operation,
            outcome,
            duration.as_secs_f64(),
        );
        crate::observe::context::push_upstream(&crate::observe::context::UpstreamCall {
            destination: self.slug.as_str(),
            environment: self.environment.as_str(),
            operation,
            status,
            outcome,
            duration,
            request_id: headers.and_then(|h| self.ehr_request_id(h)),
        });
    }

    /// The EHR's own id for a request, from the vendor profile's header: printable ASCII, at most 128
    /// characters, else nothing (it is stored and shown to operators).
    fn ehr_request_id(&self, headers: &reqwest::header::HeaderMap) -> Option<String> {
        let value = headers
            .get(self.configured.request_id_header)?
            .to_str()
            .ok()?
            .trim();
        (!value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| value.to_owned())
    }

    /// Sends the kick-off; on 202 returns the upstream's status URL (never shown to the partner).
    pub async fn kickoff(&self, req: &UpstreamRequest) -> Result<Url, UpstreamError> {
        let answer = self.send_authorized(req, "kickoff", Resend::Never).await?;
        match answer.status {
            202 => {
                let location = answer
                    .headers
                    .get(reqwest::header::CONTENT_LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.trim().is_empty())
                    .ok_or_else(|| {
                        UpstreamError::BadAnswer("HTTP 202 without a Content-Location".into())
                    })?;
                // The IG's Content-Location is an absolute URL; anything else (a relative path, or
                // garbage such as `ht!tp://::nope` that would resolve as one) is refused now rather
                // than accepted and found broken at the first poll.
                let url = Url::parse(location.trim()).map_err(|_| {
                    UpstreamError::BadAnswer(
                        "a Content-Location that is not an absolute URL".into(),
                    )
                })?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(UpstreamError::BadAnswer(
                        "a Content-Location that is not an http(s) URL".into(),
                    ));
                }
                // The status URL will receive the destination's credentials: keep it on its origin.
                if !self.same_origin(&url) {
                    return Err(UpstreamError::BadAnswer(
                        "a Content-Location outside the destination's origin".into(),
                    ));
                }
                Ok(url)
            }
            _ => Err(self.classify(&answer, "a kick-off")),
        }
    }

    /// Polls the upstream status URL (`Accept: application/json`, the destination's credentials).
    pub async fn status(
        &self,
        status_url: &str,
        log_id: Uuid,
    ) -> Result<UpstreamAnswer, UpstreamError> {
        self.check_same_origin(status_url)?;
        let req = UpstreamRequest {
            method: "GET",
            url: status_url.to_owned(),
            headers: vec![
                ("Accept", "application/json".to_owned()),
                ("X-Request-ID", log_id.to_string()),
            ],
            body: None,
        };
        self.send_authorized(&req, "status", Resend::WhenClosedUnanswered)
            .await
    }

    /// Deletes the upstream job; any 2xx, or 404/410 (already gone), counts as done.
    pub async fn delete(&self, status_url: &str, log_id: Uuid) -> Result<(), UpstreamError> {
        self.check_same_origin(status_url)?;
        let req = UpstreamRequest {
            method: "DELETE",
            url: status_url.to_owned(),
            headers: vec![
                ("Accept", "application/fhir+json".to_owned()),
                ("X-Request-ID", log_id.to_string()),
            ],
            body: None,
        };
        let answer = self
            .send_authorized(&req, "delete", Resend::WhenClosedUnanswered)
            .await?;
        match answer.status {
            200..=299 | 404 | 410 => Ok(()),
            _ => Err(self.classify(&answer, "a delete")),
        }
    }

    /// Whether `url` is on the destination's own origin (scheme, host and port).
    pub fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.base_url.origin()
    }

    /// Status and delete calls carry the credential, so they only ever go to the destination's origin.
    fn check_same_origin(&self, url: &str) -> Result<(), UpstreamError> {
        match Url::parse(url) {
            Ok(u) if self.same_origin(&u) => Ok(()),
            _ => Err(UpstreamError::BadAnswer(
                "the EHR's status URL is not on the destination's origin".into(),
            )),
        }
    }

    /// The credential to present now, if the destination has one. `rejected` is a token the EHR just
    /// answered 401 to.
    pub(crate) async fn current_token(
        &self,
        rejected: Option<&Secret>,
    ) -> Result<Option<Secret>, UpstreamError> {
        match &self.auth {
            UpstreamAuth::None => Ok(None),
            UpstreamAuth::Bearer(token) => Ok(Some(token.clone())),
            UpstreamAuth::Smart(client) => client.token(&self.base_url, rejected).await.map(Some),
        }
    }

    /// Sends with the destination's credential; a SMART token the EHR refuses (401) is replaced once.
    async fn send_authorized(
        &self,
        req: &UpstreamRequest,
        operation: &str,
        resend: Resend,
    ) -> Result<UpstreamAnswer, UpstreamError> {
        let token = self.current_token(None).await?;
        let answer = self
            .send_observed(req, token.as_ref(), operation, resend)
            .await?;
        if answer.status == 401 && matches!(self.auth, UpstreamAuth::Smart(_)) {
            tracing::info!(message = "The EHR refused the access token; fetching a new one.", destination = %self.slug);
            let fresh = self.current_token(token.as_ref()).await?;
            return self
                .send_observed(req, fresh.as_ref(), operation, resend)
                .await;
        }
        Ok(answer)
    }

    async fn send_observed(
        &self,
        req: &UpstreamRequest,
        token: Option<&Secret>,
        operation: &str,
        resend: Resend,
    ) -> Result<UpstreamAnswer, UpstreamError> {
        let started = std::time::Instant::now();
        match self.http.send(req, token, resend).await {
            Ok(answer) => {
                self.observe(
                    operation,
                    started,
                    Some(answer.status),
                    outcome_of_status(answer.status),
                    Some(&answer.headers),
                );
                Ok(answer)
            }
            Err(e) => {
                let e = UpstreamError::from(e);
                self.observe(operation, started, None, e.outcome(), None);
                Err(e)
            }
        }
    }
}

/// The metric outcome for an upstream HTTP status.
pub fn outcome_of_status(status: u16) -> &'static str {
    match status {
        200..=299 => "ok",
        429 => "throttled",
        400..=499 => "rejected",
        500..=599 => "server-error",
        _ => "bad-answer",
    }
}

impl UpstreamError {
    /// The metric outcome for this failure.
    pub fn outcome(&self) -> &'static str {
        match self {
            UpstreamError::Rejected { .. } => "rejected",
            UpstreamError::Throttled { .. } => "throttled",
            UpstreamError::ServerError { .. } | UpstreamError::Unavailable { .. } => "server-error",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Unreachable => "unreachable",
            UpstreamError::BadAnswer(_) => "bad-answer",
            UpstreamError::CredentialsRefused(_) => "credentials-refused",
        }
    }
}

impl Connector {
    /// [`classify_failure`] with this EHR's `Retry-After` cap, and with every word of the EHR's
    /// issues that names the EHR (its URLs, its host) replaced: the partner never sees them.
    pub fn classify(&self, answer: &UpstreamAnswer, what: &str) -> UpstreamError {
        let scrub = |issues: &mut Vec<Issue>| {
            for issue in issues.iter_mut() {
                if self.names_ehr(&issue.diagnostics) {
                    issue.diagnostics = issue
                        .diagnostics
                        .split(' ')
                        .map(|word| {
                            if self.names_ehr(word) {
                                "[EHR URL]"
                            } else {
                                word
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                }
                if issue
                    .expression
                    .as_deref()
                    .is_some_and(|e| self.names_ehr(e))
                {
                    issue.expression = None;
                }
            }
        };
        let mut error = classify_failure(answer, what, self.max_retry_after_secs);
        match &mut error {
            UpstreamError::Rejected { issues, .. } | UpstreamError::Throttled { issues, .. } => {
                scrub(issues)
            }
            _ => {}
        }
        error
    }
}

/// Maps an answer that is not the success the caller wanted to an [`UpstreamError`]; a `Retry-After`
/// is read and capped at `max_wait` seconds.
pub fn classify_failure(answer: &UpstreamAnswer, what: &str, max_wait: u64) -> UpstreamError {
    match answer.status {
        429 => UpstreamError::Throttled {
            retry_after: retry_after_secs(&answer.headers, Utc::now(), max_wait),
            // A bare 429 says all there is to say; only pass on issues the EHR actually wrote.
            issues: if answer.body.iter().all(u8::is_ascii_whitespace) {
                Vec::new()
            } else {
                upstream_issues(answer).unwrap_or_default()
            },
        },
        // The EHR refusing the gateway's own credentials is the gateway's problem, not the partner's:
        // the EHR's explanation goes to the log, the partner hears that the gateway was refused.
        401 | 403 => {
            let said: Vec<String> = upstream_issues(answer)
                .unwrap_or_default()
                .into_iter()
                .map(|i| i.diagnostics)
                .collect();
            tracing::warn!(
                message = "The EHR refused the gateway's credentials.",
                status = answer.status,
                request = what,
                ehr_said = %said.join(" | ")
            );
            UpstreamError::CredentialsRefused(format!("HTTP {} to {what}", answer.status))
        }
        400..=499 => match upstream_issues(answer) {
            Ok(issues) => UpstreamError::Rejected {
                status: answer.status,
                issues,
            },
            Err(e) => e,
        },
        503 => match retry_after_secs(&answer.headers, Utc::now(), max_wait) {
            Some(wait) => UpstreamError::Unavailable {
                retry_after: wait.max(1),
            },
            None => UpstreamError::ServerError { status: 503 },
        },
        500..=599 => UpstreamError::ServerError {
            status: answer.status,
        },
        other => UpstreamError::BadAnswer(format!("HTTP {other} to {what}")),
    }
}
