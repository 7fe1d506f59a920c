//! What the gateway knows about the request it is serving, gathered as the request goes: its Log ID
//! and AttemptID, the source, destination and environment, the job, and every upstream call made for
//! it. Carried in a task-local so the connectors can add their calls without every signature passing
//! it along; the same record feeds the message log, the request's tracing span and the metrics.
//!
//! Holds metadata only: never bodies, patient references, tokens or URLs.

use crate::observe::msglog::{LogRecord, RecordKind};
use chrono::Utc;
use std::sync::{Arc, Mutex, MutexGuard};
use tracing::Span;
use uuid::Uuid;

tokio::task_local! {
    static CURRENT: Arc<RequestContext>;
}

/// One request's (or one poller pass's) record under construction.
#[derive(Debug)]
pub struct RequestContext {
    fields: Mutex<Fields>,
    span: Span,
}

/// The fields as gathered so far.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    pub log_id: Uuid,
    pub attempt_id: Uuid,
    pub source: Option<String>,
    pub destination: Option<String>,
    pub environment: Option<String>,
    pub event_type: Option<String>,
    pub job_id: Option<Uuid>,
    pub error_code: Option<String>,
    /// The last upstream call's HTTP status.
    pub upstream_status: Option<u16>,
    /// Every upstream call made for this request.
    pub upstream: Vec<LogRecord>,
}

impl RequestContext {
    pub fn new(log_id: Uuid, attempt_id: Uuid, span: Span) -> Arc<Self> {
        span.record("log_id", tracing::field::display(log_id));
        span.record("attempt_id", tracing::field::display(attempt_id));
        Arc::new(RequestContext {
            fields: Mutex::new(Fields {
                log_id,
                attempt_id,
                ..Fields::default()
            }),
            span,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Fields> {
        self.fields.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of what has been gathered.
    pub fn snapshot(&self) -> Fields {
        self.lock().clone()
    }

    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Runs `fut` with this context as the current one.
    pub async fn scope<F: std::future::Future>(self: Arc<Self>, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }
}

fn with<R>(f: impl FnOnce(&RequestContext) -> R) -> Option<R> {
    CURRENT.try_with(|ctx| f(ctx)).ok()
}

/// The current context, to carry into work that outlives the handler (a streamed body).
pub fn current() -> Option<Arc<RequestContext>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// The request's Log ID: the envelope's `Meta.Logs[0].ID`, or the job's for status, file and delete.
pub fn set_log_id(log_id: Uuid) {
    with(|ctx| {
        ctx.lock().log_id = log_id;
        ctx.span.record("log_id", tracing::field::display(log_id));
    });
}

/// The current request's Log ID.
pub fn log_id() -> Option<Uuid> {
    with(|ctx| ctx.lock().log_id)
}

/// The AttemptID the gateway gave the current request.
pub fn attempt_id() -> Option<Uuid> {
    with(|ctx| ctx.lock().attempt_id)
}

/// The AttemptID the gateway gave this request.
pub fn set_attempt_id(attempt_id: Uuid) {
    with(|ctx| {
        ctx.lock().attempt_id = attempt_id;
        ctx.span
            .record("attempt_id", tracing::field::display(attempt_id));
    });
}

/// The source the caller authenticated as (or claimed, on an open gateway).
pub fn set_source(source: &str) {
    with(|ctx| {
        ctx.lock().source = Some(source.to_owned());
        ctx.span.record("source", source);
    });
}

/// The configured destination and environment the request was routed to.
pub fn set_target(destination: &str, environment: &str) {
    with(|ctx| {
        let mut f = ctx.lock();
        f.destination = Some(destination.to_owned());
        f.environment = Some(environment.to_owned());
        ctx.span.record("destination", destination);
        ctx.span.record("environment", environment);
    });
}

pub fn set_event_type(event_type: &str) {
    with(|ctx| ctx.lock().event_type = Some(event_type.to_owned()));
}

pub fn set_job(job_id: Uuid) {
    with(|ctx| {
        ctx.lock().job_id = Some(job_id);
        ctx.span.record("job_id", tracing::field::display(job_id));
    });
}

/// The error code the request ended with (an `GatewayError` code).
pub fn set_error_code(code: &str) {
    with(|ctx| ctx.lock().error_code = Some(code.to_owned()));
}

/// One upstream call, as it ended.
#[derive(Debug, Clone)]
pub struct UpstreamCall<'a> {
    pub destination: &'a str,
    pub environment: &'a str,
    pub operation: &'a str,
    pub status: Option<u16>,
    /// `ok`, or why not.
    pub outcome: &'a str,
    pub duration: std::time::Duration,
    /// The EHR's own id for the request (e.g. Oracle Health's `opc-request-id`), when it sent one.
    pub request_id: Option<String>,
}

/// Records an upstream call on the current request (when there is one).
pub fn push_upstream(call: &UpstreamCall<'_>) {
    with(|ctx| {
        let mut f = ctx.lock();
        if call.status.is_some() {
            f.upstream_status = call.status;
        }
        let record = LogRecord {
            kind: RecordKind::Upstream,
            log_id: f.log_id,
            attempt_id: f.attempt_id,
            time: Utc::now(),
            source: f.source.clone(),
            destination: Some(call.destination.to_owned()),
            environment: Some(call.environment.to_owned()),
            event_type: f.event_type.clone(),
            method: None,
            route: call.operation.to_owned(),
            gateway_status: None,
            upstream_status: call.status,
            error_code: (call.outcome != "ok").then(|| call.outcome.to_owned()),
            duration_ms: call.duration.as_secs_f64() * 1000.0,
            job_id: f.job_id,
            upstream_request_id: call.request_id.clone(),
            seq: 0,
        };
        f.upstream.push(record);
    });
}
