//! The operators' API: the message log and the jobs, on the `[admin] api_key_sha256` credential only.
//! Metadata only: no envelope bodies, manifests, patient references, tokens or upstream URLs.

use crate::domain::{Issue, IssueCode};
use crate::service::error::GatewayError;
use crate::state::AppState;
use crate::store::{
    AttemptRecord, Job, JobFilter, JobState, LogFilter, LogRecord, RecordKind, StoreError,
};
use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::future::{Ready, ready};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use uuid::Uuid;

/// Page size when none is asked for, and the largest allowed.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

/// A caller holding the admin key.
#[derive(Debug)]
pub struct Admin;

fn authenticate(req: &HttpRequest) -> Result<Admin, GatewayError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| GatewayError::Internal("application state missing".into()))?;
    let key = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            GatewayError::Unauthorized("Send Authorization: Bearer <the admin API key>.".into())
        })?;
    let digest = Sha256::digest(key.as_bytes());
    let admin_ok = state
        .settings
        .admin
        .api_key_sha256
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .is_some_and(|expected| bool::from(expected.as_slice().ct_eq(digest.as_slice())));
    if admin_ok {
        return Ok(Admin);
    }
    let partner = crate::auth::source_for_key(&state.settings, key).is_some()
        || state.issuer.source_of(&state.settings, key).is_some();
    if partner {
        return Err(GatewayError::Forbidden(Issue::at(
            IssueCode::Forbidden,
            "Authorization",
            "is a partner credential; the admin API takes only the [admin] key",
        )));
    }
    Err(GatewayError::Unauthorized(
        "The admin API key is not valid.".into(),
    ))
}

impl FromRequest for Admin {
    type Error = GatewayError;
    type Future = Ready<Result<Admin, GatewayError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

/// Query parameters, each name at most once; unknown names are refused so a mistyped filter never
/// silently returns everything.
struct Params {
    pairs: Vec<(String, String)>,
    issues: Vec<Issue>,
}

impl Params {
    fn parse(req: &HttpRequest, known: &[&[&str]]) -> Params {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut issues = Vec::new();
        for (name, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
            let Some(canonical) = known.iter().find(|names| names.contains(&name.as_ref())) else {
                issues.push(Issue::at(
                    IssueCode::NotSupported,
                    crate::domain::shorten(&name),
                    "is not a filter of this route",
                ));
                continue;
            };
            let canonical = canonical[0].to_owned();
            if pairs.iter().any(|(n, _)| *n == canonical) {
                issues.push(Issue::at(IssueCode::Value, canonical, "may be given once"));
                continue;
            }
            pairs.push((canonical, value.into_owned()));
        }
        Params { pairs, issues }
    }

    fn text(&self, name: &str) -> Option<String> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    }

    fn parsed<T>(&mut self, name: &str, what: &str, f: impl Fn(&str) -> Option<T>) -> Option<T> {
        let raw = self.text(name)?;
        let v = f(&raw);
        if v.is_none() {
            self.issues
                .push(Issue::at(IssueCode::Value, name, format!("must be {what}")));
        }
        v
    }

    fn time(&mut self, name: &str) -> Option<DateTime<Utc>> {
        self.parsed(
            name,
            "an RFC 3339 date-time such as 2026-11-23T10:00:00Z",
            |s| {
                DateTime::parse_from_rfc3339(s)
                    .ok()
                    .map(|d| d.with_timezone(&Utc))
            },
        )
    }

    fn uuid(&mut self, name: &str) -> Option<Uuid> {
        self.parsed(name, "a UUID", |s| Uuid::parse_str(s).ok())
    }

    fn page(&mut self) -> (u32, u64) {
        let limit = self
            .parsed("limit", "a whole number from 1 to 500", |s| {
                s.parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
            })
            .unwrap_or(DEFAULT_LIMIT);
        let offset = self
            .parsed("offset", "a whole number, 0 or more", |s| {
                s.parse::<u64>().ok()
            })
            .unwrap_or(0);
        (limit, offset)
    }

    fn finish(self) -> Result<(), GatewayError> {
        if self.issues.is_empty() {
            Ok(())
        } else {
            Err(GatewayError::Invalid(self.issues))
        }
    }
}

/// A UUID from the path, or a 400 naming the parameter.
fn path_uuid(raw: &str, name: &str) -> Result<Uuid, GatewayError> {
    Uuid::parse_str(raw).map_err(|_| {
        GatewayError::Invalid(vec![Issue::at(IssueCode::Value, name, "must be a UUID")])
    })
}

fn store_error(e: StoreError) -> GatewayError {
    e.into()
}

/// The link to the next page, when there is one: the same query with `offset` moved on.
fn next_link(req: &HttpRequest, limit: u32, offset: u64, more: bool) -> Option<String> {
    more.then(|| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
            if name != "offset" {
                query.append_pair(&name, &value);
            }
        }
        query.append_pair("offset", &(offset + u64::from(limit)).to_string());
        format!("{}?{}", req.path(), query.finish())
    })
}

/// A page of the message log.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogPage {
    pub entries: Vec<LogRecord>,
    /// Records matching the filters, on every page.
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
    /// The next page's path and query; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Everything recorded under one Log ID.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogDetail {
    pub log_id: Uuid,
    /// The partner's requests under this Log ID (kick-off, retries, status, files, delete), oldest first.
    pub requests: Vec<LogRecord>,
    /// Every upstream call made for them, the poller's included, oldest first.
    pub attempts: Vec<LogRecord>,
    /// The jobs this Log ID started.
    pub jobs: Vec<JobView>,
}

/// A job as operators see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: Uuid,
    pub log_id: Uuid,
    pub attempt_id: Uuid,
    pub source: String,
    pub destination: String,
    pub environment: String,
    pub event_type: String,
    /// pending | kickoff-unknown | accepted | failed | completed | export-failed | expired | deleted
    pub state: String,
    /// Kick-off attempts made.
    pub attempts: i64,
    /// The HTTP status of the last call to the EHR for this job.
    pub last_upstream_status: Option<u16>,
    pub error_code: Option<String>,
    pub progress: Option<String>,
    pub next_poll_at: Option<DateTime<Utc>>,
    pub last_polled_at: Option<DateTime<Utc>>,
    pub poll_failures: i64,
    pub notify_state: Option<String>,
    pub notify_attempts: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One kick-off attempt of a job.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub attempt_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: String,
    pub upstream_status: Option<u16>,
    pub error_code: Option<String>,
}

impl From<AttemptRecord> for AttemptView {
    fn from(a: AttemptRecord) -> Self {
        AttemptView {
            attempt_id: a.attempt_id,
            started_at: a.started_at,
            finished_at: a.finished_at,
            outcome: a.outcome,
            upstream_status: a.upstream_status,
            error_code: a.error_code,
        }
    }
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    pub limit: u32,
    pub offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One job with its kick-off attempts and its calls to the EHR.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobView,
    pub kickoff_attempts: Vec<AttemptView>,
    /// The latest calls to the EHR for this job (kick-off, polls, files, delete), newest first.
    pub upstream_calls: Vec<LogRecord>,
}

async fn job_view(state: &AppState, job: Job) -> Result<JobView, GatewayError> {
    let last_call = state
        .store
        .query_logs(
            &LogFilter {
                kind: Some(RecordKind::Upstream),
                job_id: Some(job.id),
                ..LogFilter::default()
            },
            1,
            0,
        )
        .await
        .map_err(store_error)?;
    let last_upstream_status = match last_call.first().and_then(|r| r.upstream_status) {
        Some(s) => Some(s),
        None => state
            .store
            .job_attempts(job.id)
            .await
            .map_err(store_error)?
            .iter()
            .rev()
            .find_map(|a| a.upstream_status),
    };
    Ok(JobView {
        id: job.id,
        log_id: job.log_id,
        attempt_id: job.attempt_id,
        source: job.source_key,
        destination: job.destination,
        environment: job.environment,
        event_type: job.event_type,
        state: job.state.as_str().to_owned(),
        attempts: job.attempts,
        last_upstream_status,
        error_code: job.error_code,
        progress: job.progress,
        next_poll_at: job.next_poll_at,
        last_polled_at: job.last_polled_at,
        poll_failures: job.poll_failures,
        notify_state: job.notify_state,
        notify_attempts: job.notify_attempts,
        created_at: job.created_at,
        updated_at: job.updated_at,
    })
}

fn json<T: Serialize>(body: &T) -> HttpResponse {
    HttpResponse::Ok().json(body)
}

/// `GET /admin/logs`
pub async fn logs(
    _: Admin,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let mut p = Params::parse(
        &req,
        &[
            &["source"],
            &["destination"],
            &["environment"],
            &["eventType", "event_type"],
            &["status", "statusClass", "status_class"],
            &["since", "from"],
            &["until", "to"],
            &["logId", "log_id"],
            &["jobId", "job_id"],
            &["kind"],
            &["limit", "_count", "count"],
            &["offset"],
        ],
    );
    let kind = p
        .parsed("kind", "request, upstream or all", |s| match s {
            "all" => Some(None),
            other => RecordKind::parse(other).map(Some),
        })
        .unwrap_or(Some(RecordKind::Request));
    let mut filter = LogFilter {
        kind,
        source: p.text("source"),
        destination: p.text("destination"),
        environment: p.text("environment"),
        event_type: p.text("eventType"),
        status_class: None,
        status: None,
        since: p.time("since"),
        until: p.time("until"),
        log_id: p.uuid("logId"),
        job_id: p.uuid("jobId"),
    };
    // `status` is a class (4xx) or one status (404).
    if let Some((class, exact)) = p.parsed(
        "status",
        "a status class (2xx, 3xx, 4xx, 5xx) or a status such as 404",
        |s| {
            let class = s.strip_suffix("xx").or_else(|| s.strip_suffix("XX"));
            match class {
                Some(d) => d
                    .parse::<u16>()
                    .ok()
                    .filter(|d| (1..=5).contains(d))
                    .map(|d| (Some(d), None)),
                None => s
                    .parse::<u16>()
                    .ok()
                    .filter(|n| (100..=599).contains(n))
                    .map(|n| (None, Some(n))),
            }
        },
    ) {
        filter.status_class = class;
        filter.status = exact;
    }
    let (limit, offset) = p.page();
    p.finish()?;
    state.log.flush().await;
    let total = state.store.count_logs(&filter).await.map_err(store_error)?;
    let mut entries = state
        .store
        .query_logs(&filter, limit + 1, offset)
        .await
        .map_err(store_error)?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    Ok(json(&LogPage {
        entries,
        total,
        limit,
        offset,
        next: next_link(&req, limit, offset, more),
    }))
}

/// `GET /admin/logs/{logId}`
pub async fn log(
    _: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let log_id = path_uuid(&path, "logId")?;
    state.log.flush().await;
    let mut records = state
        .store
        .query_logs(
            &LogFilter {
                log_id: Some(log_id),
                ..LogFilter::default()
            },
            10_000,
            0,
        )
        .await
        .map_err(store_error)?;
    records.reverse();
    let jobs = state
        .store
        .list_jobs(
            &JobFilter {
                log_id: Some(log_id),
                ..JobFilter::default()
            },
            MAX_LIMIT,
            0,
        )
        .await
        .map_err(store_error)?;
    if records.is_empty() && jobs.is_empty() {
        return Err(GatewayError::NotFound(
            "Nothing is recorded under this Log ID (it may be older than the retention period)."
                .into(),
        ));
    }
    let mut views = Vec::with_capacity(jobs.len());
    for job in jobs {
        views.push(job_view(&state, job).await?);
    }
    let (requests, attempts) = records
        .into_iter()
        .partition(|r| r.kind == RecordKind::Request);
    Ok(json(&LogDetail {
        log_id,
        requests,
        attempts,
        jobs: views,
    }))
}

/// `GET /admin/jobs`
pub async fn jobs(
    _: Admin,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let mut p = Params::parse(
        &req,
        &[
            &["state"],
            &["source"],
            &["destination"],
            &["environment"],
            &["logId", "log_id"],
            &["limit", "_count", "count"],
            &["offset"],
        ],
    );
    let filter = JobFilter {
        state: p.parsed(
            "state",
            "one of pending, kickoff-unknown, accepted, failed, completed, export-failed, expired, deleted",
            JobState::parse,
        ),
        source: p.text("source"),
        destination: p.text("destination"),
        environment: p.text("environment"),
        log_id: p.uuid("logId"),
    };
    let (limit, offset) = p.page();
    p.finish()?;
    let mut found = state
        .store
        .list_jobs(&filter, limit + 1, offset)
        .await
        .map_err(store_error)?;
    let more = found.len() > limit as usize;
    found.truncate(limit as usize);
    let mut jobs = Vec::with_capacity(found.len());
    for job in found {
        jobs.push(job_view(&state, job).await?);
    }
    Ok(json(&JobPage {
        jobs,
        limit,
        offset,
        next: next_link(&req, limit, offset, more),
    }))
}

/// `GET /admin/jobs/{jobId}`
pub async fn job(
    _: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let job_id = path_uuid(&path, "jobId")?;
    let job = state
        .store
        .get(job_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| GatewayError::NotFound("No job with this id.".into()))?;
    state.log.flush().await;
    let kickoff_attempts = state
        .store
        .job_attempts(job_id)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(AttemptView::from)
        .collect();
    let upstream_calls = state
        .store
        .query_logs(
            &LogFilter {
                kind: Some(RecordKind::Upstream),
                job_id: Some(job_id),
                ..LogFilter::default()
            },
            100,
            0,
        )
        .await
        .map_err(store_error)?;
    Ok(json(&JobDetail {
        job: job_view(&state, job).await?,
        kickoff_attempts,
        upstream_calls,
    }))
}
