//! The operators' API: the message log and the jobs, on the `[admin] api_key_sha256` credential only
//! (`auth::admin`). Metadata only: no envelope bodies, manifests, patient references, tokens or
//! upstream URLs.

pub(crate) mod query;
pub mod views;

use crate::auth::admin::Admin;
use crate::error::GatewayError;
use crate::state::AppState;
use crate::store::{JobFilter, JobState, LogFilter, RecordKind, StoreError};
use actix_web::{HttpRequest, HttpResponse, web};
use query::{MAX_LIMIT, Params, cursor_link, next_link, path_uuid};
use serde::Serialize;
use views::{AttemptView, JobDetail, JobPage, JobView, LogDetail, LogPage};

fn store_error(e: StoreError) -> GatewayError {
    e.into()
}

/// The operators' views of `jobs`, their last EHR statuses read for all of them in one query.
async fn job_views(
    state: &AppState,
    jobs: Vec<crate::store::Job>,
) -> Result<Vec<JobView>, GatewayError> {
    let ids: Vec<uuid::Uuid> = jobs.iter().map(|j| j.id).collect();
    let last = state
        .store
        .last_upstream_statuses(&ids)
        .await
        .map_err(store_error)?;
    Ok(jobs
        .into_iter()
        .map(|job| {
            let status = last.get(&job.id).copied();
            JobView::new(job, status)
        })
        .collect())
}

fn json<T: Serialize>(body: &T) -> HttpResponse {
    HttpResponse::Ok().json(body)
}

/// The message log's filters and page from a query string (the names `GET /admin/logs` documents).
pub(crate) fn log_query(req: &HttpRequest) -> Result<(LogFilter, u32, u64), GatewayError> {
    let mut p = Params::parse(
        req,
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
            &["cursor"],
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
        before: p.parsed(
            "cursor",
            "a cursor from a page's next link",
            crate::store::LogCursor::parse,
        ),
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
    Ok((filter, limit, offset))
}

/// Records counted for a page's `total`; past it the page says `totalCapped` (a count over millions
/// of records would cost more than the page).
pub(crate) const COUNT_CAP: u64 = 10_000;

/// The longest a page's count may take: a filter matching few of millions of records makes the store
/// read many to count up to [`COUNT_CAP`] (benches/message_log.sh: 0.2 to 0.8 s at 10 million). Past it
/// the page answers without the count: `total` is what is known (this page and those before it) and
/// `totalCapped` says there may be more.
const COUNT_BUDGET: std::time::Duration = std::time::Duration::from_millis(40);

/// One page of the message log, newest first.
pub(crate) struct LogPageData {
    pub entries: Vec<crate::store::LogRecord>,
    /// Records matching the filters (all pages), up to [`COUNT_CAP`].
    pub total: u64,
    /// More than [`COUNT_CAP`] match.
    pub capped: bool,
    /// Where the next page starts, when there is one.
    pub next: Option<crate::store::LogCursor>,
}

/// One page of the message log, newest first: the records, how many match in all (up to
/// [`COUNT_CAP`]), and where the next page starts.
pub(crate) async fn log_page(
    state: &AppState,
    filter: &LogFilter,
    limit: u32,
    offset: u64,
) -> Result<LogPageData, GatewayError> {
    state.log.flush().await;
    let all_pages = LogFilter {
        before: None,
        ..filter.clone()
    };
    let counted = state
        .store
        .count_logs(&all_pages, COUNT_CAP + 1, COUNT_BUDGET)
        .await
        .map_err(store_error)?;
    let mut entries = state
        .store
        .query_logs(filter, limit + 1, offset)
        .await
        .map_err(store_error)?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    let next = more
        .then(|| entries.last().map(crate::store::LogCursor::after))
        .flatten();
    let (total, capped) = match counted {
        Some(n) => (n.min(COUNT_CAP), n > COUNT_CAP),
        // Out of time: at least the records up to this page's end.
        None => (offset + entries.len() as u64, true),
    };
    Ok(LogPageData {
        entries,
        total,
        capped,
        next,
    })
}

/// `GET /admin/logs`
pub async fn logs(
    _: Admin,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let (filter, limit, offset) = log_query(&req)?;
    let page = log_page(&state, &filter, limit, offset).await?;
    Ok(json(&LogPage {
        entries: page.entries,
        total: page.total,
        total_capped: page.capped,
        limit,
        offset,
        next: page.next.map(|c| cursor_link(&req, &c.encode())),
    }))
}

/// Everything recorded under one Log ID, or 404.
pub(crate) async fn log_detail(
    state: &AppState,
    log_id: uuid::Uuid,
) -> Result<LogDetail, GatewayError> {
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
    let views = job_views(state, jobs).await?;
    let (requests, attempts) = records
        .into_iter()
        .partition(|r| r.kind == RecordKind::Request);
    Ok(LogDetail {
        log_id,
        requests,
        attempts,
        jobs: views,
    })
}

/// `GET /admin/logs/{logId}`
pub async fn log(
    _: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let log_id = path_uuid(&path, "logId")?;
    Ok(json(&log_detail(&state, log_id).await?))
}

/// The jobs' filters and page from a query string (the names `GET /admin/jobs` documents).
pub(crate) fn job_query(req: &HttpRequest) -> Result<(JobFilter, u32, u64), GatewayError> {
    let mut p = Params::parse(
        req,
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
    Ok((filter, limit, offset))
}

/// One page of jobs, newest first, and whether there is a next page.
pub(crate) async fn jobs_page(
    state: &AppState,
    filter: &JobFilter,
    limit: u32,
    offset: u64,
) -> Result<(Vec<JobView>, bool), GatewayError> {
    let mut found = state
        .store
        .list_jobs(filter, limit + 1, offset)
        .await
        .map_err(store_error)?;
    let more = found.len() > limit as usize;
    found.truncate(limit as usize);
    Ok((job_views(state, found).await?, more))
}

/// `GET /admin/jobs`
pub async fn jobs(
    _: Admin,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let (filter, limit, offset) = job_query(&req)?;
    let (jobs, more) = jobs_page(&state, &filter, limit, offset).await?;
    Ok(json(&JobPage {
        jobs,
        limit,
        offset,
        next: next_link(&req, limit, offset, more),
    }))
}

/// One job with its kick-off attempts and latest EHR calls, and the job as stored; or 404.
pub(crate) async fn job_detail(
    state: &AppState,
    job_id: uuid::Uuid,
) -> Result<(JobDetail, crate::store::Job), GatewayError> {
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
    let detail = JobDetail {
        job: job_views(state, vec![job.clone()])
            .await?
            .pop()
            .ok_or_else(|| GatewayError::Internal("job view lost".into()))?,
        kickoff_attempts,
        upstream_calls,
    };
    Ok((detail, job))
}

/// `GET /admin/jobs/{jobId}`
pub async fn job(
    _: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let job_id = path_uuid(&path, "jobId")?;
    Ok(json(&job_detail(&state, job_id).await?.0))
}
