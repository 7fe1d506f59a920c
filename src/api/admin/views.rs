//! What the admin API answers: pages and details of the message log and the jobs. Metadata only: no
//! envelope bodies, manifests, patient references, tokens or upstream URLs.

use crate::store::{AttemptRecord, Job, LogRecord};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// A page of the message log.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogPage {
    pub entries: Vec<LogRecord>,
    /// Records matching the filters, on every page; counted up to 10,000 (and for at most 40 ms).
    pub total: u64,
    /// There are more than `total`: more than 10,000 match, or counting them took too long and
    /// `total` is only what this page shows (with the pages before it).
    pub total_capped: bool,
    pub limit: u32,
    pub offset: u64,
    /// The next page's path and query (a `cursor` after this page's last record); absent on the
    /// last page.
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

impl JobView {
    /// The operators' view of `job`, with its last status from the EHR.
    pub fn new(job: Job, last_upstream_status: Option<u16>) -> JobView {
        JobView {
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
        }
    }
}
