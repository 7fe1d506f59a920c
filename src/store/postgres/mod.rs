//! The job store for several gateway replicas: PostgreSQL. The request path's writes (kick-off
//! reservations and outcomes, the poller's updates, message-log records) are committed in groups by
//! [`writer`]; reads, the poller's claims (`FOR UPDATE SKIP LOCKED`) and the rest use the pool.

use super::filters::{push_job_filter, push_log_filter, push_page};
use super::{
    AssertionStore, AttemptOutcome, AttemptRecord, Claim, Job, JobFilter, JobStats, JobStore,
    LogFilter, LogRecord, MessageLogStore, NewJob, NotifyUpdate, StatusUpdate, Store, StoreError,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};
use std::time::Duration;
use uuid::Uuid;

mod writer;

use writer::{Done, Op, Write};

#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    /// The request path's writes, committed in groups (see [`writer`]).
    writer: std::sync::Mutex<Option<tokio::sync::mpsc::Sender<Write>>>,
    commits: std::sync::Arc<super::CommitStats>,
}

/// Marks reservations whose outcome never arrived as `kickoff-unknown`: one job, or every one
/// reserved before `before`. Each gets an attempt record saying so. Runs in the caller's transaction.
async fn mark_unknown(
    conn: &mut PgConnection,
    job_id: Option<Uuid>,
    before: Option<DateTime<Utc>>,
) -> Result<u64, StoreError> {
    let now = Utc::now();
    let rows = sqlx::query(
        "UPDATE jobs SET state = 'kickoff-unknown', error_code = 'kickoff-unknown', updated_at = $1
         WHERE state = 'pending' AND ($2::uuid IS NULL OR id = $2) AND ($3::timestamptz IS NULL OR updated_at < $3)
         RETURNING id, attempt_id",
    )
    .bind(now)
    .bind(job_id)
    .bind(before)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let id: Uuid = row.try_get("id")?;
        let attempt: Uuid = row.try_get("attempt_id")?;
        sqlx::query(
            "INSERT INTO job_attempts (job_id, attempt_id, started_at, finished_at, outcome, upstream_status, error_code)
             VALUES ($1, $2, $3, $3, 'unknown', NULL, 'kickoff-unknown')
             ON CONFLICT (job_id, attempt_id) DO NOTHING",
        )
        .bind(id)
        .bind(attempt)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(rows.len() as u64)
}

impl super::rows::ReadRow for PgRow {
    fn text(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn uuid(&self, col: &str) -> Result<Option<Uuid>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn time(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        // BIGINT columns, and INTEGER ones (statuses, literals).
        match self.try_get::<Option<i64>, _>(col) {
            Ok(v) => Ok(v),
            Err(_) => Ok(self.try_get::<Option<i32>, _>(col)?.map(i64::from)),
        }
    }
    fn float(&self, col: &str) -> Result<f64, StoreError> {
        Ok(self.try_get(col)?)
    }
}

impl PostgresStore {
    /// Connects to `url` and runs the migrations (safe to run from several replicas at once).
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))?;
        let commits = std::sync::Arc::new(super::CommitStats::default());
        let writer = writer::start(writer::connect_options(url)?, commits.clone()).await?;
        Ok(PostgresStore {
            pool,
            writer: std::sync::Mutex::new(Some(writer)),
            commits,
        })
    }

    async fn write(&self, op: Op) -> Result<Done, StoreError> {
        let sender = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let closed = || StoreError::Unavailable("the job store is closed".into());
        let sender = sender.ok_or_else(closed)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        sender
            .send(Write { op, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    async fn mark_unknown(
        &self,
        job_id: Option<Uuid>,
        before: Option<DateTime<Utc>>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = mark_unknown(&mut tx, job_id, before).await?;
        tx.commit().await?;
        Ok(n)
    }

    fn row_to_job(row: &PgRow) -> Result<Job, StoreError> {
        super::rows::job(row)
    }
}

/// The poller's claim. The jobs due a poll and those due a notification, each locked in its index's
/// order and only as far as the limit (a locking clause may not sit inside a UNION, hence two CTEs),
/// then the two short lists merged. One `WHERE … OR …` ordered by `COALESCE(next_poll_at,
/// notify_next_at)` read and sorted every due job for each claim (150,000 due jobs: a sequential
/// scan and a sort spilling to disk, 70 ms a claim; this way 1.7 ms). Rows locked here but not
/// picked are free again when the statement commits.
pub(super) const CLAIM_DUE: &str = "WITH polls AS (
        SELECT id, next_poll_at AS due FROM jobs
        WHERE state = 'accepted' AND next_poll_at <= $3
          AND (claim_until IS NULL OR claim_until < $3)
        ORDER BY next_poll_at LIMIT $4
        FOR UPDATE SKIP LOCKED),
     notes AS (
        SELECT id, notify_next_at AS due FROM jobs
        WHERE notify_state = 'pending' AND notify_next_at <= $3
          AND (claim_until IS NULL OR claim_until < $3)
        ORDER BY notify_next_at LIMIT $4
        FOR UPDATE SKIP LOCKED),
     picked AS (
        SELECT id FROM (SELECT id, due FROM polls UNION ALL SELECT id, due FROM notes) d
        ORDER BY due LIMIT $4)
     UPDATE jobs SET claimed_by = $1, claim_until = $2
     WHERE id IN (SELECT id FROM picked)
     RETURNING *";

#[async_trait]
impl JobStore for PostgresStore {
    async fn claim(&self, job: &NewJob, stale_after: Duration) -> Result<Claim, StoreError> {
        match self.write(Op::Claim(job.clone(), stale_after)).await? {
            Done::Claim(claim) => Ok(claim),
            Done::Nothing => Err(StoreError::Unavailable(
                "the store writer lost a claim".into(),
            )),
        }
    }

    async fn mark_unknown_kickoffs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.mark_unknown(None, Some(before)).await
    }

    async fn finish_attempt(
        &self,
        job_id: Uuid,
        attempt_id: Uuid,
        outcome: &AttemptOutcome,
    ) -> Result<(), StoreError> {
        self.write(Op::Finish(job_id, attempt_id, outcome.clone()))
            .await
            .map(drop)
    }

    async fn get(&self, job_id: Uuid) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::row_to_job).transpose()
    }

    async fn record_status(
        &self,
        job_id: Uuid,
        update: &StatusUpdate,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(Op::Status(job_id, update.clone(), at))
            .await
            .map(drop)
    }

    async fn claim_due(
        &self,
        worker: &str,
        at: DateTime<Utc>,
        ttl: Duration,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let until = at + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let rows = sqlx::query(CLAIM_DUE)
            .bind(worker)
            .bind(until)
            .bind(at)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::row_to_job).collect()
    }

    async fn release(&self, job_id: Uuid, worker: &str) -> Result<(), StoreError> {
        self.write(Op::Release(job_id, worker.to_owned()))
            .await
            .map(drop)
    }

    async fn release_all(&self, worker: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET claimed_by = NULL, claim_until = NULL WHERE claimed_by = $1")
            .bind(worker)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn record_notification(
        &self,
        job_id: Uuid,
        update: NotifyUpdate,
    ) -> Result<(), StoreError> {
        self.write(Op::Notify(job_id, update)).await.map(drop)
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Job>, StoreError> {
        let mut qb = QueryBuilder::<Postgres>::new("SELECT * FROM jobs");
        push_job_filter(&mut qb, filter);
        push_page(&mut qb, "created_at DESC, id", limit, offset);
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(Self::row_to_job).collect()
    }

    async fn job_attempts(&self, job_id: Uuid) -> Result<Vec<AttemptRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT attempt_id, started_at, finished_at, outcome, upstream_status, error_code
             FROM job_attempts WHERE job_id = $1 ORDER BY started_at",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
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
        let rows = super::filters::last_upstream_statuses::<Postgres>(job_ids)
            .build()
            .fetch_all(&self.pool)
            .await?;
        let out = rows
            .iter()
            .map(super::rows::last_status)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(super::filters::fold_last_statuses(out))
    }

    async fn job_stats(&self) -> Result<JobStats, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let by_state = rows
            .iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect::<Result<Vec<(String, i64)>, StoreError>>()?;
        let oldest_due: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT MIN(next_poll_at) FROM jobs WHERE state = 'accepted' AND next_poll_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(JobStats {
            by_state,
            oldest_due,
        })
    }

    async fn prune_jobs(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        // One statement: the attempts go with their jobs (the foreign key is checked at its end), and
        // a job changed meanwhile (a partner's retry of a failed one) is rechecked and kept.
        static PRUNE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "WITH gone AS (
                     DELETE FROM jobs WHERE id IN ({}) AND updated_at < $1 RETURNING id),
                 attempts AS (DELETE FROM job_attempts WHERE job_id IN (SELECT id FROM gone))
                 SELECT COUNT(*) FROM gone",
                crate::store::prunable_jobs_sql("jobs", "$1", "$2")
            )
        });
        let gone: i64 = sqlx::query_scalar(&PRUNE)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(gone).unwrap_or(0))
    }
}

#[async_trait]
impl MessageLogStore for PostgresStore {
    async fn append_log(&self, records: Vec<LogRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.write(Op::AppendLog(records)).await.map(drop)
    }

    async fn query_logs(
        &self,
        filter: &LogFilter,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<LogRecord>, StoreError> {
        let mut qb = QueryBuilder::<Postgres>::new("SELECT * FROM message_log");
        push_log_filter(&mut qb, filter);
        push_page(&mut qb, "at DESC, seq DESC", limit, offset);
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(super::rows::log_record).collect()
    }

    async fn count_logs(
        &self,
        filter: &LogFilter,
        cap: u64,
        budget: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let mut qb =
            QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM (SELECT 1 FROM message_log");
        push_log_filter(&mut qb, filter);
        qb.push(" LIMIT ")
            .push_bind(i64::try_from(cap).unwrap_or(i64::MAX))
            .push(") AS capped");
        // The server stops the count at the budget (the connection comes back at once, unlike a
        // query abandoned by the client).
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "SET LOCAL statement_timeout = {}",
            budget.as_millis().clamp(1, 60_000)
        ))
        .execute(&mut *tx)
        .await?;
        match qb.build_query_scalar::<i64>().fetch_one(&mut *tx).await {
            Ok(n) => {
                tx.commit().await?;
                Ok(Some(u64::try_from(n).unwrap_or(0)))
            }
            // 57014 query_canceled: the statement timeout.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("57014") => {
                let _ = tx.rollback().await;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn prune_logs(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let gone = sqlx::query(
            "DELETE FROM message_log WHERE seq IN
                (SELECT seq FROM message_log WHERE at < $1 ORDER BY at LIMIT $2)",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(gone.rows_affected())
    }
}

#[async_trait]
impl AssertionStore for PostgresStore {
    async fn use_jti(
        &self,
        source_key: &str,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM assertion_jtis WHERE expires_at < now()")
            .execute(&self.pool)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO assertion_jtis (source_key, jti, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (source_key, jti) DO NOTHING",
        )
        .bind(source_key)
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn jti_used(&self, source_key: &str, jti: &str) -> Result<bool, StoreError> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM assertion_jtis WHERE source_key = $1 AND jti = $2 AND expires_at >= now()",
        )
        .bind(source_key)
        .bind(jti)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn commits(&self) -> super::CommitCounts {
        self.commits.counts()
    }

    async fn shared_secret(&self, name: &str, fresh: &str) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO gateway_keys (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(fresh)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM gateway_keys WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        // Dropping the only sender ends the writer thread, which closes its connection.
        *self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.pool.close().await;
    }
}
