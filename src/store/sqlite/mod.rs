//! The embedded job store: one SQLite file in WAL mode, created when missing.
//!
//! Every write goes to one writer task that owns the only write connection and commits whatever is
//! queued in one transaction (group commit): a caller hears back only once its write is on disk
//! (`synchronous = FULL`), and concurrent kick-offs share one fsync instead of queueing for one each.
//! Reads use a pool of read-only connections. Times are fixed-width RFC 3339 UTC text, so they compare
//! correctly as strings.

use super::filters::{
    LOG_ROWS_PER_INSERT, log_insert, push_job_filter, push_log_filter, push_page,
};
use super::{
    AssertionStore, AttemptOutcome, AttemptRecord, Claim, Decision, FailureCount, Job, JobFilter,
    JobState, JobStats, JobStore, LogFilter, LogRecord, MessageLogStore, NewJob, NotifyUpdate,
    StatusColumns, StatusUpdate, Store, StoreError,
};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqlitePool};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;

#[derive(Debug)]
pub struct SqliteStore {
    writer: Mutex<Option<mpsc::Sender<Write>>>,
    reader: SqlitePool,
}

/// One write, queued for the writer task.
#[derive(Debug)]
enum Op {
    Claim(NewJob, Duration),
    Finish(Uuid, Uuid, AttemptOutcome),
    Status(Uuid, StatusUpdate, DateTime<Utc>),
    ClaimDue(String, DateTime<Utc>, Duration, u32),
    Release(Uuid, String),
    ReleaseAll(String),
    Notify(Uuid, NotifyUpdate),
    UseJti(String, String, DateTime<Utc>),
    AppendLog(Vec<LogRecord>),
    PruneLogs(DateTime<Utc>, u32),
    MarkUnknown(DateTime<Utc>),
    Secret(String, String),
}

#[derive(Debug)]
enum Done {
    Claim(Claim),
    Jobs(Vec<Job>),
    Fresh(bool),
    Count(u64),
    Text(String),
    Nothing,
}

#[derive(Debug)]
struct Write {
    op: Op,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn time(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn opt_time(s: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    s.as_deref().map(time).transpose()
}

impl super::rows::ReadRow for SqliteRow {
    fn text(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn uuid(&self, col: &str) -> Result<Option<Uuid>, StoreError> {
        self.try_get::<Option<String>, _>(col)?
            .as_deref()
            .map(uuid)
            .transpose()
    }
    fn time(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        opt_time(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn float(&self, col: &str) -> Result<f64, StoreError> {
        Ok(self.try_get(col)?)
    }
}

fn row_to_job(row: &SqliteRow) -> Result<Job, StoreError> {
    super::rows::job(row)
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `url`, runs the migrations, starts the writer.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before the partner hears 202.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        if let Some(parent) = options.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let mut conn = SqliteConnection::connect_with(&options).await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.read_only(true))
            .await?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(writer(conn, rx));
        Ok(SqliteStore {
            writer: Mutex::new(Some(tx)),
            reader,
        })
    }

    async fn write(&self, op: Op) -> Result<Done, StoreError> {
        let sender = match self.writer.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let closed = || StoreError::Unavailable("the job store is closed".into());
        let sender = sender.ok_or_else(closed)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(Write { op, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// The writer task: takes what is queued, runs it in one transaction, answers after the commit.
async fn writer(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut results = Vec::with_capacity(batch.len());
        let committed = async {
            let mut tx = conn.begin().await?;
            for w in &batch {
                results.push(apply(&mut tx, &w.op).await);
            }
            tx.commit().await
        }
        .await;
        match committed {
            Ok(()) => {
                for (w, result) in batch.drain(..).zip(results) {
                    let _ = w.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(message = "Job store commit failed.", error = %e);
                for w in batch.drain(..) {
                    let _ = w.reply.send(Err(StoreError::Unavailable(e.to_string())));
                }
            }
        }
    }
    let _ = conn.close().await;
}

async fn apply(conn: &mut SqliteConnection, op: &Op) -> Result<Done, StoreError> {
    Ok(match op {
        Op::Claim(job, stale) => Done::Claim(claim(conn, job, *stale).await?),
        Op::MarkUnknown(before) => Done::Count(mark_unknown(conn, None, Some(*before)).await?),
        Op::Finish(job, attempt, outcome) => {
            finish_attempt(conn, *job, *attempt, outcome).await?;
            Done::Nothing
        }
        Op::Status(job, update, at) => {
            record_status(conn, *job, update, *at).await?;
            Done::Nothing
        }
        Op::ClaimDue(worker, at, ttl, limit) => {
            Done::Jobs(claim_due(conn, worker, *at, *ttl, *limit).await?)
        }
        Op::Release(job, worker) => {
            sqlx::query("UPDATE jobs SET claimed_by = NULL, claim_until = NULL WHERE id = ?1 AND claimed_by = ?2")
                .bind(job.to_string())
                .bind(worker)
                .execute(&mut *conn)
                .await?;
            Done::Nothing
        }
        Op::ReleaseAll(worker) => {
            sqlx::query(
                "UPDATE jobs SET claimed_by = NULL, claim_until = NULL WHERE claimed_by = ?1",
            )
            .bind(worker)
            .execute(&mut *conn)
            .await?;
            Done::Nothing
        }
        Op::UseJti(source, jti, expires_at) => {
            sqlx::query("DELETE FROM assertion_jtis WHERE expires_at < ?1")
                .bind(ts(Utc::now()))
                .execute(&mut *conn)
                .await?;
            let inserted = sqlx::query(
                "INSERT INTO assertion_jtis (source_key, jti, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (source_key, jti) DO NOTHING",
            )
            .bind(source)
            .bind(jti)
            .bind(ts(*expires_at))
            .execute(&mut *conn)
            .await?;
            Done::Fresh(inserted.rows_affected() == 1)
        }
        Op::Secret(name, fresh) => {
            sqlx::query(
                "INSERT INTO gateway_keys (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(fresh)
            .execute(&mut *conn)
            .await?;
            let value: String =
                sqlx::query_scalar("SELECT value FROM gateway_keys WHERE name = ?1")
                    .bind(name)
                    .fetch_one(&mut *conn)
                    .await?;
            Done::Text(value)
        }
        Op::AppendLog(records) => {
            for chunk in records.chunks(LOG_ROWS_PER_INSERT) {
                log_insert::<Sqlite>(chunk)
                    .build()
                    .execute(&mut *conn)
                    .await?;
            }
            Done::Nothing
        }
        Op::PruneLogs(before, limit) => {
            let gone = sqlx::query(
                "DELETE FROM message_log WHERE seq IN
                    (SELECT seq FROM message_log WHERE at < ?1 ORDER BY at LIMIT ?2)",
            )
            .bind(ts(*before))
            .bind(i64::from(*limit))
            .execute(&mut *conn)
            .await?;
            Done::Count(gone.rows_affected())
        }
        Op::Notify(job, update) => {
            let (state, next) = match update {
                NotifyUpdate::Sent => ("sent", None),
                NotifyUpdate::RetryAt(t) => ("pending", Some(ts(*t))),
                NotifyUpdate::GaveUp => ("failed", None),
            };
            sqlx::query(
                "UPDATE jobs SET notify_state = ?1, notify_next_at = ?2, notify_attempts = notify_attempts + 1
                 WHERE id = ?3",
            )
            .bind(state)
            .bind(next)
            .bind(job.to_string())
            .execute(&mut *conn)
            .await?;
            Done::Nothing
        }
    })
}

async fn claim(
    conn: &mut SqliteConnection,
    job: &NewJob,
    stale_after: Duration,
) -> Result<Claim, StoreError> {
    // Twice at most: a request whose job ended retires that row and is then inserted afresh.
    for _ in 0..2 {
        let now = ts(Utc::now());
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, source_key, log_id, attempt_id, attempts, destination, environment, event_type,
                               group_id, fingerprint, state, created_at, updated_at, request)
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?10, ?11)
             ON CONFLICT (source_key, log_id, fingerprint) DO NOTHING",
        )
        .bind(job.id.to_string())
        .bind(&job.source_key)
        .bind(job.log_id.to_string())
        .bind(job.attempt_id.to_string())
        .bind(&job.destination)
        .bind(&job.environment)
        .bind(&job.event_type)
        .bind(&job.group_id)
        .bind(&job.fingerprint)
        .bind(&now)
        .bind(&job.request)
        .execute(&mut *conn)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Claim::New);
        }
        let row = sqlx::query(
            "SELECT * FROM jobs WHERE source_key = ?1 AND log_id = ?2 AND fingerprint = ?3",
        )
        .bind(&job.source_key)
        .bind(job.log_id.to_string())
        .bind(&job.fingerprint)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(existing) = row.as_ref().map(row_to_job).transpose()? else {
            return Ok(Claim::InFlight);
        };
        // The writer is the only writer, but each update checks the state it read, as PostgreSQL's do.
        match super::decide(&existing, stale_after, job.retry_unknown) {
            Decision::Settled(claim) => return Ok(claim),
            Decision::MarkUnknown => {
                mark_unknown(conn, Some(existing.id), None).await?;
                let mut job = existing;
                job.state = JobState::KickoffUnknown;
                return Ok(Claim::Unknown(Box::new(job)));
            }
            Decision::StartNewJob => {
                sqlx::query(
                    "UPDATE jobs SET fingerprint = fingerprint || '#ended-' || id, updated_at = ?1
                     WHERE id = ?2 AND state = ?3",
                )
                .bind(&now)
                .bind(existing.id.to_string())
                .bind(existing.state.as_str())
                .execute(&mut *conn)
                .await?;
            }
            Decision::RetrySameJob => {
                let updated = sqlx::query(
                    "UPDATE jobs SET state = 'pending', attempt_id = ?1, attempts = attempts + 1, updated_at = ?2,
                                     error_code = NULL, progress = NULL, manifest = NULL, expires = NULL,
                                     failure = NULL, notify_state = NULL, poll_failures = 0
                     WHERE id = ?3 AND state = ?4 AND attempt_id = ?5",
                )
                .bind(job.attempt_id.to_string())
                .bind(&now)
                .bind(existing.id.to_string())
                .bind(existing.state.as_str())
                .bind(existing.attempt_id.to_string())
                .execute(&mut *conn)
                .await?;
                return Ok(if updated.rows_affected() == 1 {
                    Claim::Retry {
                        job_id: existing.id,
                        attempt: existing.attempts + 1,
                    }
                } else {
                    Claim::InFlight
                });
            }
        }
    }
    Ok(Claim::InFlight)
}

/// Marks reservations whose outcome never arrived as `kickoff-unknown`: one job, or every one reserved
/// before `before`. Each gets an attempt record saying so.
async fn mark_unknown(
    conn: &mut SqliteConnection,
    job_id: Option<Uuid>,
    before: Option<DateTime<Utc>>,
) -> Result<u64, StoreError> {
    let now = ts(Utc::now());
    let rows = sqlx::query(
        "UPDATE jobs SET state = 'kickoff-unknown', error_code = 'kickoff-unknown', updated_at = ?1
         WHERE state = 'pending' AND (?2 IS NULL OR id = ?2) AND (?3 IS NULL OR updated_at < ?3)
         RETURNING id, attempt_id, updated_at",
    )
    .bind(&now)
    .bind(job_id.map(|id| id.to_string()))
    .bind(before.map(ts))
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let id: String = row.try_get("id")?;
        let attempt: String = row.try_get("attempt_id")?;
        sqlx::query(
            "INSERT INTO job_attempts (job_id, attempt_id, started_at, finished_at, outcome, upstream_status, error_code)
             VALUES (?1, ?2, ?3, ?3, 'unknown', NULL, 'kickoff-unknown')
             ON CONFLICT (job_id, attempt_id) DO NOTHING",
        )
        .bind(id)
        .bind(attempt)
        .bind(&now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(rows.len() as u64)
}

async fn finish_attempt(
    conn: &mut SqliteConnection,
    job_id: Uuid,
    attempt_id: Uuid,
    outcome: &AttemptOutcome,
) -> Result<(), StoreError> {
    let now = ts(Utc::now());
    let (state, url, error, upstream_status) = super::attempt_columns(outcome);
    sqlx::query(
        "UPDATE jobs SET state = ?1, upstream_status_url = COALESCE(?2, upstream_status_url), error_code = ?3,
                         updated_at = ?4, next_poll_at = CASE WHEN ?1 = 'accepted' THEN ?4 ELSE NULL END
         WHERE id = ?5 AND attempt_id = ?6",
    )
    .bind(state)
    .bind(url)
    .bind(error)
    .bind(&now)
    .bind(job_id.to_string())
    .bind(attempt_id.to_string())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO job_attempts (job_id, attempt_id, started_at, finished_at, outcome, upstream_status, error_code)
         VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6)
         ON CONFLICT (job_id, attempt_id) DO UPDATE SET finished_at = ?3, outcome = ?4,
             upstream_status = ?5, error_code = ?6",
    )
    .bind(job_id.to_string())
    .bind(attempt_id.to_string())
    .bind(&now)
    .bind(state)
    .bind(upstream_status.map(i64::from))
    .bind(error)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn record_status(
    conn: &mut SqliteConnection,
    job_id: Uuid,
    update: &StatusUpdate,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let c = StatusColumns::from_update(update, at);
    sqlx::query(
        "UPDATE jobs SET
            state = COALESCE(?1, state),
            progress = COALESCE(?2, progress),
            retry_after_secs = COALESCE(?3, retry_after_secs),
            next_poll_at = ?4,
            last_polled_at = ?5,
            poll_failures = CASE WHEN ?6 THEN poll_failures + 1 ELSE 0 END,
            manifest = COALESCE(?7, manifest),
            expires = COALESCE(?8, expires),
            error_code = COALESCE(?9, error_code),
            failure = COALESCE(?12, failure),
            notify_state = CASE WHEN ?10 THEN 'pending' ELSE notify_state END,
            notify_next_at = CASE WHEN ?10 THEN ?5 ELSE notify_next_at END,
            updated_at = ?5
         WHERE id = ?11 AND state <> 'deleted'",
    )
    .bind(c.state)
    .bind(c.progress)
    .bind(c.retry_after_secs)
    .bind(c.next_poll_at.map(ts))
    .bind(ts(at))
    .bind(matches!(c.failures, FailureCount::Increment))
    .bind(c.manifest)
    .bind(c.expires)
    .bind(c.error_code)
    .bind(c.notify)
    .bind(job_id.to_string())
    .bind(c.failure)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn claim_due(
    conn: &mut SqliteConnection,
    worker: &str,
    at: DateTime<Utc>,
    ttl: Duration,
    limit: u32,
) -> Result<Vec<Job>, StoreError> {
    let until = at + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    // One writer: this single statement is the whole claim (PostgreSQL needs SKIP LOCKED instead).
    let rows = sqlx::query(
        "UPDATE jobs SET claimed_by = ?1, claim_until = ?2
         WHERE id IN (
            SELECT id FROM jobs
            WHERE ((state = 'accepted' AND next_poll_at <= ?3)
                   OR (notify_state = 'pending' AND notify_next_at <= ?3))
              AND (claim_until IS NULL OR claim_until < ?3)
            ORDER BY COALESCE(next_poll_at, notify_next_at)
            LIMIT ?4)
         RETURNING *",
    )
    .bind(worker)
    .bind(ts(until))
    .bind(ts(at))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(row_to_job).collect()
}

fn expect_nothing(done: Done) -> Result<(), StoreError> {
    match done {
        Done::Nothing => Ok(()),
        other => Err(StoreError::Corrupt(format!(
            "unexpected writer answer {other:?}"
        ))),
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn claim(&self, job: &NewJob, stale_after: Duration) -> Result<Claim, StoreError> {
        match self.write(Op::Claim(job.clone(), stale_after)).await? {
            Done::Claim(c) => Ok(c),
            other => Err(StoreError::Corrupt(format!(
                "unexpected writer answer {other:?}"
            ))),
        }
    }

    async fn mark_unknown_kickoffs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        match self.write(Op::MarkUnknown(before)).await? {
            Done::Count(n) => Ok(n),
            other => Err(StoreError::Corrupt(format!(
                "unexpected writer answer {other:?}"
            ))),
        }
    }

    async fn finish_attempt(
        &self,
        job_id: Uuid,
        attempt_id: Uuid,
        outcome: &AttemptOutcome,
    ) -> Result<(), StoreError> {
        expect_nothing(
            self.write(Op::Finish(job_id, attempt_id, outcome.clone()))
                .await?,
        )
    }

    async fn get(&self, job_id: Uuid) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?1")
            .bind(job_id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(row_to_job).transpose()
    }

    async fn record_status(
        &self,
        job_id: Uuid,
        update: &StatusUpdate,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        expect_nothing(self.write(Op::Status(job_id, update.clone(), now)).await?)
    }

    async fn claim_due(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        ttl: Duration,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        match self
            .write(Op::ClaimDue(worker.to_owned(), now, ttl, limit))
            .await?
        {
            Done::Jobs(jobs) => Ok(jobs),
            other => Err(StoreError::Corrupt(format!(
                "unexpected writer answer {other:?}"
            ))),
        }
    }

    async fn release(&self, job_id: Uuid, worker: &str) -> Result<(), StoreError> {
        expect_nothing(self.write(Op::Release(job_id, worker.to_owned())).await?)
    }

    async fn release_all(&self, worker: &str) -> Result<(), StoreError> {
        expect_nothing(self.write(Op::ReleaseAll(worker.to_owned())).await?)
    }

    async fn record_notification(
        &self,
        job_id: Uuid,
        update: NotifyUpdate,
    ) -> Result<(), StoreError> {
        expect_nothing(self.write(Op::Notify(job_id, update)).await?)
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Job>, StoreError> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM jobs");
        push_job_filter(&mut qb, filter);
        push_page(&mut qb, "created_at DESC, id", limit, offset);
        let rows = qb.build().fetch_all(&self.reader).await?;
        rows.iter().map(row_to_job).collect()
    }

    async fn job_attempts(&self, job_id: Uuid) -> Result<Vec<AttemptRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT attempt_id, started_at, finished_at, outcome, upstream_status, error_code
             FROM job_attempts WHERE job_id = ?1 ORDER BY started_at",
        )
        .bind(job_id.to_string())
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(super::rows::attempt).collect()
    }

    async fn last_upstream_statuses(
        &self,
        job_ids: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, u16>, StoreError> {
        if job_ids.is_empty() {
            return Ok(Default::default());
        }
        let rows = super::filters::last_upstream_statuses::<Sqlite>(job_ids)
            .build()
            .fetch_all(&self.reader)
            .await?;
        let out = rows
            .iter()
            .map(super::rows::last_status)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(super::filters::fold_last_statuses(out))
    }

    async fn job_stats(&self) -> Result<JobStats, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.reader)
            .await?;
        let by_state = rows
            .iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect::<Result<Vec<(String, i64)>, StoreError>>()?;
        let oldest: Option<String> = sqlx::query_scalar(
            "SELECT MIN(next_poll_at) FROM jobs WHERE state = 'accepted' AND next_poll_at IS NOT NULL",
        )
        .fetch_one(&self.reader)
        .await?;
        Ok(JobStats {
            by_state,
            oldest_due: opt_time(oldest)?,
        })
    }
}

#[async_trait]
impl MessageLogStore for SqliteStore {
    async fn append_log(&self, records: &[LogRecord]) -> Result<(), StoreError> {
        expect_nothing(self.write(Op::AppendLog(records.to_vec())).await?)
    }

    async fn query_logs(
        &self,
        filter: &LogFilter,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<LogRecord>, StoreError> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM message_log");
        push_log_filter(&mut qb, filter);
        push_page(&mut qb, "at DESC, seq DESC", limit, offset);
        let rows = qb.build().fetch_all(&self.reader).await?;
        rows.iter().map(super::rows::log_record).collect()
    }

    async fn count_logs(&self, filter: &LogFilter, cap: u64) -> Result<u64, StoreError> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM (SELECT 1 FROM message_log");
        push_log_filter(&mut qb, filter);
        qb.push(" LIMIT ")
            .push_bind(i64::try_from(cap).unwrap_or(i64::MAX))
            .push(") AS capped");
        let n: i64 = qb.build_query_scalar().fetch_one(&self.reader).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn prune_logs(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        match self.write(Op::PruneLogs(before, limit)).await? {
            Done::Count(n) => Ok(n),
            other => Err(StoreError::Corrupt(format!(
                "unexpected writer answer {other:?}"
            ))),
        }
    }
}

#[async_trait]
impl AssertionStore for SqliteStore {
    async fn use_jti(
        &self,
        source_key: &str,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        match self
            .write(Op::UseJti(
                source_key.to_owned(),
                jti.to_owned(),
                expires_at,
            ))
            .await?
        {
            Done::Fresh(fresh) => Ok(fresh),
            other => Err(StoreError::Corrupt(format!(
                "unexpected writer answer {other:?}"
            ))),
        }
    }

    async fn jti_used(&self, source_key: &str, jti: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM assertion_jtis WHERE source_key = ?1 AND jti = ?2 AND expires_at >= ?3",
        )
        .bind(source_key)
        .bind(jti)
        .bind(ts(Utc::now()))
        .fetch_optional(&self.reader)
        .await?;
        Ok(found.is_some())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn shared_secret(&self, name: &str, fresh: &str) -> Result<String, StoreError> {
        match self
            .write(Op::Secret(name.to_owned(), fresh.to_owned()))
            .await?
        {
            Done::Text(value) => Ok(value),
            other => Err(StoreError::Corrupt(format!(
                "unexpected writer answer {other:?}"
            ))),
        }
    }

    async fn close(&self) {
        // Dropping the only sender ends the writer task, which closes the write connection.
        match self.writer.lock() {
            Ok(mut guard) => *guard = None,
            Err(poisoned) => *poisoned.into_inner() = None,
        }
        self.reader.close().await;
    }
}
