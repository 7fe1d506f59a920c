//! The job store: every accepted kick-off and what became of it, so a partner's status URL works after
//! any restart and from any replica.

mod filters;
pub mod postgres;
pub mod sqlite;

mod log;
mod rows;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
pub use log::{LogCursor, LogFilter, LogRecord, RecordKind};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Reserved; the upstream kick-off is under way.
    Pending,
    /// The gateway stopped while the EHR was answering the kick-off: the EHR may or may not have
    /// accepted the export. Never re-sent on its own; the partner asks explicitly.
    KickoffUnknown,
    /// The upstream accepted the kick-off; the export is in progress.
    Accepted,
    /// The kick-off failed; a retry with the same envelope tries again.
    Failed,
    /// The export finished; the manifest is stored.
    Completed,
    /// The upstream reported the export failed after accepting it.
    ExportFailed,
    /// The upstream no longer has the files.
    Expired,
    /// The partner deleted the job.
    Deleted,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::KickoffUnknown => "kickoff-unknown",
            JobState::Accepted => "accepted",
            JobState::Failed => "failed",
            JobState::Completed => "completed",
            JobState::ExportFailed => "export-failed",
            JobState::Expired => "expired",
            JobState::Deleted => "deleted",
        }
    }

    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 8] = [
        JobState::Pending,
        JobState::KickoffUnknown,
        JobState::Accepted,
        JobState::Failed,
        JobState::Completed,
        JobState::ExportFailed,
        JobState::Expired,
        JobState::Deleted,
    ];

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether nothing more happens to a job in this state unless its partner sends the same kick-off
    /// again. Such jobs are pruned `[jobs] retention_days` after their last change; jobs in flight and
    /// `kickoff-unknown` ones (which wait for the partner or an operator) never are.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Failed
                | JobState::Completed
                | JobState::ExportFailed
                | JobState::Expired
                | JobState::Deleted
        )
    }
}

/// The jobs pruning may delete, as SQL for both backends: finished (see [`JobState::is_finished`]),
/// created and last changed before `before` (SQLite `?1`, PostgreSQL `$1`), oldest first, `limit`
/// (`?2`, `$2`) at most, read from `jobs` as `from` names it. Only `jobs_created` finds them without
/// reading every finished job: SQLite's planner, with no statistics for `jobs`, took `jobs_due` for the
/// `state IN (…)` and read all of a million finished jobs, then sorted them, holding the writer for
/// most of a second per chunk (benches/message_log.sh), so SQLite names the index.
pub(crate) fn prunable_jobs_sql(from: &str, before: &str, limit: &str) -> String {
    let finished: Vec<String> = JobState::ALL
        .into_iter()
        .filter(|s| s.is_finished())
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!(
        "SELECT id FROM {from} WHERE created_at < {before} AND updated_at < {before} AND state IN ({})
         ORDER BY created_at LIMIT {limit}",
        finished.join(", ")
    )
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
    /// The upstream's last `X-Progress`.
    pub progress: Option<String>,
    /// The wait the upstream asked for at its last 202.
    pub retry_after_secs: Option<i64>,
    /// Not before this time may the upstream be polled again.
    pub next_poll_at: Option<DateTime<Utc>>,
    pub last_polled_at: Option<DateTime<Utc>>,
    /// Upstream polls that failed in a row (backoff).
    pub poll_failures: i64,
    /// The upstream's manifest, as received (URLs not rewritten).
    pub manifest: Option<String>,
    /// The upstream's `Expires` header for the manifest.
    pub expires: Option<String>,
    /// For an export the EHR reported failed: what the partner is answered (`{"status", "issue"}`).
    pub failure: Option<String>,
    pub notify_state: Option<String>,
    pub notify_attempts: i64,
    /// The partner's kick-off, relative to the destination's FHIR base.
    pub request: Option<String>,
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
    /// The partner's kick-off, relative to the destination's FHIR base (`Group/g/$export?_type=…`),
    /// for the manifest's `request`.
    pub request: Option<String>,
    /// The partner asked explicitly to send a kick-off whose earlier outcome is unknown again
    /// (`Prefer: retry-unknown-kickoff`).
    pub retry_unknown: bool,
}

/// The store's answer to a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// A new job was reserved: call upstream.
    New,
    /// An earlier attempt of this request failed (or was abandoned): call upstream again for `job_id`.
    Retry { job_id: Uuid, attempt: i64 },
    /// This request was already accepted: answer with this job, no upstream call.
    Existing(Box<Job>),
    /// Another attempt of this same request is under way right now.
    InFlight,
    /// An earlier attempt's outcome is unknown (the gateway stopped while the EHR was answering): the
    /// EHR may have accepted the export. Nothing is sent unless the partner asks explicitly.
    Unknown(Box<Job>),
}

/// How a kick-off attempt ended.
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

/// What a status poll learned.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusUpdate {
    /// Still running: poll again after `retry_after_secs`.
    InProgress {
        progress: Option<String>,
        retry_after_secs: u64,
        /// A partial manifest the EHR sent with its 202 (Bulk Data v3), as received.
        manifest: Option<String>,
    },
    /// The poll itself failed (upstream down): back off until `retry_after_secs` from now.
    PollFailed {
        retry_after_secs: u64,
    },
    /// Done: the manifest as received, and whether the source is owed a notification.
    Completed {
        manifest: String,
        expires: Option<String>,
        notify: bool,
    },
    /// The upstream reported the export failed (or polls kept failing): `failure` is the answer every
    /// later poll gets.
    ExportFailed {
        error_code: String,
        notify: bool,
        failure: Option<String>,
    },
    Expired,
    Deleted,
}

/// Where a notification delivery stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NotifyUpdate {
    Sent,
    /// Failed; try again at this time.
    RetryAt(DateTime<Utc>),
    GaveUp,
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

/// What `GET /admin/jobs` filters on.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub source: Option<String>,
    pub destination: Option<String>,
    pub environment: Option<String>,
    pub log_id: Option<Uuid>,
}

/// One upstream kick-off attempt of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub attempt_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: String,
    pub upstream_status: Option<u16>,
    pub error_code: Option<String>,
}

/// Counts for `/metrics`, read at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobStats {
    pub by_state: Vec<(String, i64)>,
    /// The earliest next-poll time among in-progress jobs.
    pub oldest_due: Option<DateTime<Utc>>,
}

/// Jobs: every accepted kick-off and what became of it. SQLite embedded, PostgreSQL for several
/// replicas; one test suite runs on both.
#[async_trait]
pub trait JobStore: Send + Sync + std::fmt::Debug {
    /// Reserves `job`, or reports what already exists for the same request: same source, Log ID and
    /// fingerprint (a partner retrying an envelope). A different request under the same Log ID is a new
    /// job, and so is the same request once its job was deleted, expired or failed (see [`decide`]). A
    /// reservation older than `stale_after` is marked `kickoff-unknown`.
    async fn claim(&self, job: &NewJob, stale_after: Duration) -> Result<Claim, StoreError>;
    /// Marks every kick-off reserved before `before` whose outcome never arrived as `kickoff-unknown`
    /// (at start: their gateway died while the EHR was answering); how many.
    async fn mark_unknown_kickoffs(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Records how the kick-off attempt `attempt_id` of `job_id` ended.
    async fn finish_attempt(
        &self,
        job_id: Uuid,
        attempt_id: Uuid,
        outcome: &AttemptOutcome,
    ) -> Result<(), StoreError>;
    async fn get(&self, job_id: Uuid) -> Result<Option<Job>, StoreError>;
    /// Records what a status poll learned (by a partner's request or the poller).
    async fn record_status(
        &self,
        job_id: Uuid,
        update: &StatusUpdate,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Claims up to `limit` jobs due for a poll or a notification, for `ttl`, skipping jobs another
    /// worker holds; a claim that ran out (its worker died) can be taken.
    async fn claim_due(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        ttl: Duration,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;
    /// Gives back one job's claim.
    async fn release(&self, job_id: Uuid, worker: &str) -> Result<(), StoreError>;
    /// Gives back every claim of `worker` (shutdown).
    async fn release_all(&self, worker: &str) -> Result<(), StoreError>;
    /// Records a notification delivery's outcome.
    async fn record_notification(
        &self,
        job_id: Uuid,
        update: NotifyUpdate,
    ) -> Result<(), StoreError>;
    /// Jobs matching `filter`, newest first.
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Job>, StoreError>;
    /// A job's kick-off attempts, oldest first.
    async fn job_attempts(&self, job_id: Uuid) -> Result<Vec<AttemptRecord>, StoreError>;
    /// Each job's last status from the EHR (its newest upstream call's, else its last kick-off
    /// attempt's), for a page of jobs at once.
    async fn last_upstream_statuses(
        &self,
        job_ids: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, u16>, StoreError>;
    /// Jobs by state and the oldest due poll, for metrics.
    async fn job_stats(&self) -> Result<JobStats, StoreError>;
    /// Deletes up to `limit` finished jobs created and last changed before `before`, with their
    /// attempts, in one short transaction; how many went. The pruner calls it until fewer than
    /// `limit` go.
    async fn prune_jobs(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;
}

/// The message log: appended off the request path, searched by the admin API, pruned by age.
#[async_trait]
pub trait MessageLogStore: Send + Sync + std::fmt::Debug {
    /// Appends message log records (taken, as they go to the store's writer).
    async fn append_log(&self, records: Vec<LogRecord>) -> Result<(), StoreError>;
    /// Message log records matching `filter`, newest first.
    async fn query_logs(
        &self,
        filter: &LogFilter,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<LogRecord>, StoreError>;
    /// How many message log records match `filter`, counting no further than `cap` and for no longer
    /// than `budget` (the store stops the query itself); `None` when the budget ran out first.
    async fn count_logs(
        &self,
        filter: &LogFilter,
        cap: u64,
        budget: std::time::Duration,
    ) -> Result<Option<u64>, StoreError>;
    /// Deletes at most `limit` of the message log records older than `before`, oldest first, in one
    /// short transaction; how many went. The pruner calls it until fewer than `limit` go, so pruning
    /// millions of records never holds the store's writes for long.
    async fn prune_logs(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;
}

/// Client-assertion ids already used at `/auth/token`, shared by every replica.
#[async_trait]
pub trait AssertionStore: Send + Sync + std::fmt::Debug {
    /// Records a client assertion's `jti` as used until `expires_at`; false when it was used before.
    /// Shared by every replica, so a replayed assertion is refused wherever it lands.
    async fn use_jti(
        &self,
        source_key: &str,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Whether `jti` is recorded for `source_key` (and not yet expired): used by the dashboard for
    /// sessions that were signed out.
    async fn jti_used(&self, source_key: &str, jti: &str) -> Result<bool, StoreError>;
}

/// The store writer's commits since the store opened, by whether the commit waited for the disk: a
/// group holding a job write does (`synced`); a group of message-log records only does not (the
/// next synced commit puts it on disk with its own). For `/metrics`.
#[derive(Debug, Default)]
pub struct CommitStats {
    groups: [std::sync::atomic::AtomicU64; 2],
    writes: [std::sync::atomic::AtomicU64; 2],
}

/// A reading of [`CommitStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitCounts {
    pub synced_groups: u64,
    pub synced_writes: u64,
    pub unsynced_groups: u64,
    pub unsynced_writes: u64,
}

impl CommitStats {
    /// One committed group of `writes` writes.
    pub(crate) fn record(&self, synced: bool, writes: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let i = usize::from(synced);
        self.groups[i].fetch_add(1, Relaxed);
        self.writes[i].fetch_add(writes as u64, Relaxed);
    }

    /// What was counted so far.
    pub fn counts(&self) -> CommitCounts {
        use std::sync::atomic::Ordering::Relaxed;
        CommitCounts {
            synced_groups: self.groups[1].load(Relaxed),
            synced_writes: self.writes[1].load(Relaxed),
            unsynced_groups: self.groups[0].load(Relaxed),
            unsynced_writes: self.writes[0].load(Relaxed),
        }
    }
}

/// One backend holding all three, as the gateway opens it.
#[async_trait]
pub trait Store: JobStore + MessageLogStore + AssertionStore {
    /// The writer's commits so far (see [`CommitStats`]).
    fn commits(&self) -> CommitCounts;
    /// Cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The secret kept under `name`: `fresh` is stored the first time, and every later call (from any
    /// replica) gets what was stored.
    async fn shared_secret(&self, name: &str, fresh: &str) -> Result<String, StoreError>;
    /// Closes the connections; later calls fail with `Unavailable` (shutdown, and tests of an outage).
    async fn close(&self);
}

/// Opens the store named by `[store] url`, running its migrations.
pub async fn open(url: &str, max_connections: u32) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(
            sqlite::SqliteStore::open(url, max_connections).await?,
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PostgresStore::open(url, max_connections).await?,
        ))
    } else {
        Err(StoreError::Unavailable(
            "the store URL must start with sqlite: or postgres://".into(),
        ))
    }
}

/// The columns a status update sets, shared by both backends' SQL.
pub(crate) struct StatusColumns {
    pub state: Option<&'static str>,
    pub progress: Option<String>,
    pub retry_after_secs: Option<i64>,
    pub next_poll_at: Option<DateTime<Utc>>,
    pub failures: FailureCount,
    pub manifest: Option<String>,
    pub expires: Option<String>,
    pub error_code: Option<String>,
    pub notify: bool,
    pub failure: Option<String>,
}

/// How an update changes `poll_failures`.
#[derive(Clone, Copy)]
pub(crate) enum FailureCount {
    Reset,
    Increment,
}

impl StatusColumns {
    pub(crate) fn from_update(update: &StatusUpdate, now: DateTime<Utc>) -> StatusColumns {
        let later =
            |secs: u64| now + chrono::Duration::seconds(secs.min(i64::MAX as u64 / 2000) as i64);
        let base = StatusColumns {
            state: None,
            progress: None,
            retry_after_secs: None,
            next_poll_at: None,
            failures: FailureCount::Reset,
            manifest: None,
            expires: None,
            error_code: None,
            notify: false,
            failure: None,
        };
        match update {
            StatusUpdate::InProgress {
                progress,
                retry_after_secs,
                manifest,
            } => StatusColumns {
                progress: progress.clone(),
                manifest: manifest.clone(),
                retry_after_secs: Some(*retry_after_secs as i64),
                next_poll_at: Some(later(*retry_after_secs)),
                ..base
            },
            StatusUpdate::PollFailed { retry_after_secs } => StatusColumns {
                next_poll_at: Some(later(*retry_after_secs)),
                failures: FailureCount::Increment,
                ..base
            },
            StatusUpdate::Completed {
                manifest,
                expires,
                notify,
            } => StatusColumns {
                state: Some(JobState::Completed.as_str()),
                manifest: Some(manifest.clone()),
                expires: expires.clone(),
                notify: *notify,
                ..base
            },
            StatusUpdate::ExportFailed {
                error_code,
                notify,
                failure,
            } => StatusColumns {
                state: Some(JobState::ExportFailed.as_str()),
                error_code: Some(error_code.clone()),
                notify: *notify,
                failure: failure.clone(),
                ..base
            },
            StatusUpdate::Expired => StatusColumns {
                state: Some(JobState::Expired.as_str()),
                ..base
            },
            StatusUpdate::Deleted => StatusColumns {
                state: Some(JobState::Deleted.as_str()),
                ..base
            },
        }
    }
}

pub(crate) fn parse_state(s: &str) -> Result<JobState, StoreError> {
    JobState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("state {s}")))
}

/// What a claim does with the row that already holds the same request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Answer this; nothing changes.
    Settled(Claim),
    /// Send the kick-off again as a new attempt of the same job (its status URL was never given out, or
    /// the partner asked explicitly).
    RetrySameJob,
    /// The reservation is stale: mark it `kickoff-unknown` and say so.
    MarkUnknown,
    /// The job ended (deleted, expired, its export failed): retire its row from the request's key and
    /// start a new job with a new status URL.
    StartNewJob,
}

/// The one rule both backends apply to a repeated request.
pub(crate) fn decide(existing: &Job, stale_after: Duration, retry_unknown: bool) -> Decision {
    let stale = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
    match existing.state {
        JobState::Pending if Utc::now() - existing.updated_at <= stale => {
            Decision::Settled(Claim::InFlight)
        }
        JobState::Pending | JobState::KickoffUnknown if retry_unknown => Decision::RetrySameJob,
        JobState::Pending => Decision::MarkUnknown,
        JobState::KickoffUnknown => Decision::Settled(Claim::Unknown(Box::new(existing.clone()))),
        JobState::Failed => Decision::RetrySameJob,
        JobState::ExportFailed | JobState::Deleted | JobState::Expired => Decision::StartNewJob,
        JobState::Accepted | JobState::Completed => {
            Decision::Settled(Claim::Existing(Box::new(existing.clone())))
        }
    }
}

/// (state, upstream status URL, error code, upstream HTTP status) for a finished attempt.
pub(crate) fn attempt_columns(
    outcome: &AttemptOutcome,
) -> (&'static str, Option<&str>, Option<&str>, Option<u16>) {
    match outcome {
        AttemptOutcome::Accepted {
            upstream_status_url,
            upstream_status,
        } => (
            "accepted",
            Some(upstream_status_url.as_str()),
            None,
            Some(*upstream_status),
        ),
        AttemptOutcome::Failed {
            error_code,
            upstream_status,
        } => ("failed", None, Some(error_code.as_str()), *upstream_status),
    }
}
