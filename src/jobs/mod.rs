//! The job store: every accepted kick-off, so a partner's status URL works after any restart.

pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Reserved; the upstream kick-off is under way.
    Pending,
    /// The upstream accepted the kick-off.
    Accepted,
    /// The last kick-off attempt failed; a retry with the same Log ID tries again.
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Accepted => "accepted",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        match s {
            "pending" => Some(JobState::Pending),
            "accepted" => Some(JobState::Accepted),
            "failed" => Some(JobState::Failed),
            _ => None,
        }
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: Uuid,
    pub source_key: String,
    pub log_id: Uuid,
    pub attempt_id: Uuid,
    pub attempts: i64,
    pub destination: String,
    pub environment: String,
    pub event_type: String,
    pub group_id: Option<String>,
    pub fingerprint: String,
    pub state: JobState,
    pub upstream_status_url: Option<String>,
    pub error_code: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a kick-off asks the store for before calling upstream.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub source_key: String,
    pub log_id: Uuid,
    pub attempt_id: Uuid,
    pub destination: String,
    pub environment: String,
    pub event_type: String,
    pub group_id: Option<String>,
    pub fingerprint: String,
}

/// The store's answer to a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// A new job was reserved: call upstream.
    New,
    /// An earlier attempt of this log failed (or was abandoned): call upstream again for `job_id`.
    Retry { job_id: Uuid, attempt: i64 },
    /// This log was already accepted: answer with this job, no upstream call.
    Existing(Box<Job>),
    /// Another attempt of this same request is under way right now.
    InFlight,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum AttemptOutcome {
    Accepted {
        upstream_status_url: String,
        upstream_status: u16,
    },
    Failed {
        error_code: String,
        upstream_status: Option<u16>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the job store is unavailable: {0}")]
    Unavailable(String),
    #[error("the job store holds a value it cannot read: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// A pending claim older than this is taken to be abandoned (its gateway died mid-call).
pub const STALE_PENDING: Duration = Duration::from_secs(15 * 60);

/// Storage for jobs; SQLite embedded, PostgreSQL for several replicas.
#[async_trait]
pub trait JobStore: Send + Sync + std::fmt::Debug {
    /// Reserves `job`, or reports what already exists for the same request: same source, Log ID and
    /// fingerprint (a partner retrying an envelope). A different request under the same Log ID is a new job.
    async fn claim(&self, job: &NewJob, stale_after: Duration) -> Result<Claim, StoreError>;
    /// Records how the attempt `attempt_id` of `job_id` ended.
    async fn finish_attempt(
        &self,
        job_id: Uuid,
        attempt_id: Uuid,
        outcome: &AttemptOutcome,
    ) -> Result<(), StoreError>;
    async fn get(&self, job_id: Uuid) -> Result<Option<Job>, StoreError>;
    /// Cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Closes the connections; later calls fail with `Unavailable` (shutdown, and tests of an outage).
    async fn close(&self);
}

/// Opens the store named by `[store] url`, running its migrations.
pub async fn open(
    url: &str,
    max_connections: u32,
) -> Result<std::sync::Arc<dyn JobStore>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(
            sqlite::SqliteStore::open(url, max_connections).await?,
        ))
    } else {
        Err(StoreError::Unavailable(
            "only sqlite: stores are available in this build of the store module".into(),
        ))
    }
}

pub(crate) fn parse_uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn parse_time(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}
