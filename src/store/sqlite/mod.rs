//! The embedded job store: one SQLite file in WAL mode, created when missing.
//!
//! Every write goes to one writer task that owns the only write connection and commits whatever is
//! queued in one transaction (group commit): a caller hears back only once its write is on disk
//! (`synchronous = FULL`), and concurrent kick-offs share one fsync instead of queueing for one each;
//! a group of message-log records alone is not synced by itself (see `writer`).
//! Reads use a pool of read-only connections. Times are fixed-width RFC 3339 UTC text, so they compare
//! correctly as strings.

use super::filters::{push_job_filter, push_log_filter, push_page};
use super::{
    AssertionStore, AttemptOutcome, AttemptRecord, Claim, CommitCounts, CommitStats, Job,
    JobFilter, JobStats, JobStore, LogFilter, LogRecord, MessageLogStore, NewJob, NotifyUpdate,
    StatusUpdate, Store, StoreError,
};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqlitePool};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

mod writer;

use writer::{Done, Op, Write};

#[derive(Debug)]
pub struct SqliteStore {
    writer: Mutex<Option<mpsc::Sender<Write>>>,
    commits: Arc<CommitStats>,
    reader: SqlitePool,
    /// Read connections for the hot path's point reads (a job by id, on every status poll): used
    /// on the calling thread, as a WAL reader never waits for the writer, because a hand-off to
    /// another thread costs several times the read itself (perf, benches/load.sh).
    points: writer::PointReaders,
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
        let path = options.get_filename().to_owned();
        let reader = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.read_only(true))
            .await?;
        conn.close().await?;
        let commits = Arc::new(CommitStats::default());
        let tx = tokio::task::spawn_blocking({
            let (path, commits) = (path.clone(), commits.clone());
            move || writer::connect(&path).and_then(|conn| writer::start(conn, commits))
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot open the store writer: {e}")))??;
        Ok(SqliteStore {
            writer: Mutex::new(Some(tx)),
            commits,
            reader,
            points: writer::PointReaders::new(path),
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
        if self.reader.is_closed() {
            return Err(StoreError::Unavailable("the job store is closed".into()));
        }
        self.points.job(job_id)
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

    async fn prune_jobs(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        match self.write(Op::PruneJobs(before, limit)).await? {
            Done::Count(n) => Ok(n),
            other => Err(StoreError::Corrupt(format!(
                "unexpected writer answer {other:?}"
            ))),
        }
    }
}

#[async_trait]
impl MessageLogStore for SqliteStore {
    async fn append_log(&self, records: Vec<LogRecord>) -> Result<(), StoreError> {
        expect_nothing(self.write(Op::AppendLog(records)).await?)
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

    async fn count_logs(
        &self,
        filter: &LogFilter,
        cap: u64,
        budget: Duration,
    ) -> Result<Option<u64>, StoreError> {
        if self.reader.is_closed() {
            return Err(StoreError::Unavailable("the job store is closed".into()));
        }
        self.points.count_logs(filter, cap, budget).await
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
    fn commits(&self) -> CommitCounts {
        self.commits.counts()
    }

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
        self.points.close();
    }
}
