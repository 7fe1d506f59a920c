//! The job store for several gateway replicas: PostgreSQL, claims taken with `FOR UPDATE SKIP LOCKED`.

use super::filters::{
    LOG_ROWS_PER_INSERT, log_insert, push_job_filter, push_log_filter, push_page,
};
use super::{
    AssertionStore, AttemptOutcome, AttemptRecord, Claim, Decision, FailureCount, Job, JobFilter,
    JobState, JobStats, JobStore, LogFilter, LogRecord, MessageLogStore, NewJob, NotifyUpdate,
    StatusColumns, StatusUpdate, Store, StoreError,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
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
    /// Marks reservations whose outcome never arrived as `kickoff-unknown`: one job, or every one
    /// reserved before `before`. Each gets an attempt record saying so.
    async fn mark_unknown(
        &self,
        job_id: Option<Uuid>,
        before: Option<DateTime<Utc>>,
    ) -> Result<u64, StoreError> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "UPDATE jobs SET state = 'kickoff-unknown', error_code = 'kickoff-unknown', updated_at = $1
             WHERE state = 'pending' AND ($2::uuid IS NULL OR id = $2) AND ($3::timestamptz IS NULL OR updated_at < $3)
             RETURNING id, attempt_id",
        )
        .bind(now)
        .bind(job_id)
        .bind(before)
        .fetch_all(&mut *tx)
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
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

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
        Ok(PostgresStore { pool })
    }

    fn row_to_job(row: &PgRow) -> Result<Job, StoreError> {
        super::rows::job(row)
    }
}

#[async_trait]
impl JobStore for PostgresStore {
    async fn claim(&self, job: &NewJob, stale_after: Duration) -> Result<Claim, StoreError> {
        // Twice at most: a request whose job ended retires that row and is then inserted afresh.
        for _ in 0..2 {
            let now = Utc::now();
            let inserted = sqlx::query(
                "INSERT INTO jobs (id, source_key, log_id, attempt_id, attempts, destination, environment, event_type,
                                   group_id, fingerprint, state, created_at, updated_at, request)
                 VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9, 'pending', $10, $10, $11)
                 ON CONFLICT (source_key, log_id, fingerprint) DO NOTHING",
            )
            .bind(job.id)
            .bind(&job.source_key)
            .bind(job.log_id)
            .bind(job.attempt_id)
            .bind(&job.destination)
            .bind(&job.environment)
            .bind(&job.event_type)
            .bind(&job.group_id)
            .bind(&job.fingerprint)
            .bind(now)
            .bind(&job.request)
            .execute(&self.pool)
            .await?;
            if inserted.rows_affected() == 1 {
                return Ok(Claim::New);
            }
            let row = sqlx::query(
                "SELECT * FROM jobs WHERE source_key = $1 AND log_id = $2 AND fingerprint = $3",
            )
            .bind(&job.source_key)
            .bind(job.log_id)
            .bind(&job.fingerprint)
            .fetch_optional(&self.pool)
            .await?;
            let Some(existing) = row.as_ref().map(Self::row_to_job).transpose()? else {
                return Ok(Claim::InFlight);
            };
            // Every update is conditional on the state read, so two replicas racing agree on one winner.
            match super::decide(&existing, stale_after, job.retry_unknown) {
                Decision::Settled(claim) => return Ok(claim),
                Decision::MarkUnknown => {
                    self.mark_unknown(Some(existing.id), None).await?;
                    let mut job = existing;
                    job.state = JobState::KickoffUnknown;
                    return Ok(Claim::Unknown(Box::new(job)));
                }
                Decision::StartNewJob => {
                    sqlx::query(
                        "UPDATE jobs SET fingerprint = fingerprint || '#ended-' || id::text, updated_at = $1
                         WHERE id = $2 AND state = $3",
                    )
                    .bind(now)
                    .bind(existing.id)
                    .bind(existing.state.as_str())
                    .execute(&self.pool)
                    .await?;
                }
                Decision::RetrySameJob => {
                    let updated = sqlx::query(
                        "UPDATE jobs SET state = 'pending', attempt_id = $1, attempts = attempts + 1, updated_at = $2,
                                         error_code = NULL, progress = NULL, manifest = NULL, expires = NULL,
                                         failure = NULL, notify_state = NULL, poll_failures = 0
                         WHERE id = $3 AND state = $4 AND attempt_id = $5",
                    )
                    .bind(job.attempt_id)
                    .bind(now)
                    .bind(existing.id)
                    .bind(existing.state.as_str())
                    .bind(existing.attempt_id)
                    .execute(&self.pool)
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

    async fn mark_unknown_kickoffs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.mark_unknown(None, Some(before)).await
    }

    async fn finish_attempt(
        &self,
        job_id: Uuid,
        attempt_id: Uuid,
        outcome: &AttemptOutcome,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        let (state, url, error, upstream_status) = super::attempt_columns(outcome);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE jobs SET state = $1, upstream_status_url = COALESCE($2, upstream_status_url), error_code = $3,
                             updated_at = $4, next_poll_at = CASE WHEN $1 = 'accepted' THEN $4 ELSE NULL END
             WHERE id = $5 AND attempt_id = $6",
        )
        .bind(state)
        .bind(url)
        .bind(error)
        .bind(now)
        .bind(job_id)
        .bind(attempt_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO job_attempts (job_id, attempt_id, started_at, finished_at, outcome, upstream_status, error_code)
             VALUES ($1, $2, $3, $3, $4, $5, $6)
             ON CONFLICT (job_id, attempt_id) DO UPDATE SET finished_at = $3, outcome = $4,
                 upstream_status = $5, error_code = $6",
        )
        .bind(job_id)
        .bind(attempt_id)
        .bind(now)
        .bind(state)
        .bind(upstream_status.map(i32::from))
        .bind(error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
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
        let c = StatusColumns::from_update(update, at);
        sqlx::query(
            "UPDATE jobs SET
                state = COALESCE($1, state),
                progress = COALESCE($2, progress),
                retry_after_secs = COALESCE($3, retry_after_secs),
                next_poll_at = $4,
                last_polled_at = $5,
                poll_failures = CASE WHEN $6 THEN poll_failures + 1 ELSE 0 END,
                manifest = COALESCE($7, manifest),
                expires = COALESCE($8, expires),
                error_code = COALESCE($9, error_code),
                failure = COALESCE($12, failure),
                notify_state = CASE WHEN $10 THEN 'pending' ELSE notify_state END,
                notify_next_at = CASE WHEN $10 THEN $5 ELSE notify_next_at END,
                updated_at = $5
             WHERE id = $11 AND state <> 'deleted'",
        )
        .bind(c.state)
        .bind(c.progress)
        .bind(c.retry_after_secs)
        .bind(c.next_poll_at)
        .bind(at)
        .bind(matches!(c.failures, FailureCount::Increment))
        .bind(c.manifest)
        .bind(c.expires)
        .bind(c.error_code)
        .bind(c.notify)
        .bind(job_id)
        .bind(c.failure)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim_due(
        &self,
        worker: &str,
        at: DateTime<Utc>,
        ttl: Duration,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let until = at + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let rows = sqlx::query(
            "UPDATE jobs SET claimed_by = $1, claim_until = $2
             WHERE id IN (
                SELECT id FROM jobs
                WHERE ((state = 'accepted' AND next_poll_at <= $3)
                       OR (notify_state = 'pending' AND notify_next_at <= $3))
                  AND (claim_until IS NULL OR claim_until < $3)
                ORDER BY COALESCE(next_poll_at, notify_next_at)
                LIMIT $4
                FOR UPDATE SKIP LOCKED)
             RETURNING *",
        )
        .bind(worker)
        .bind(until)
        .bind(at)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::row_to_job).collect()
    }

    async fn release(&self, job_id: Uuid, worker: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET claimed_by = NULL, claim_until = NULL WHERE id = $1 AND claimed_by = $2")
            .bind(job_id)
            .bind(worker)
            .execute(&self.pool)
            .await?;
        Ok(())
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
        let (state, next) = match update {
            NotifyUpdate::Sent => ("sent", None),
            NotifyUpdate::RetryAt(t) => ("pending", Some(t)),
            NotifyUpdate::GaveUp => ("failed", None),
        };
        sqlx::query(
            "UPDATE jobs SET notify_state = $1, notify_next_at = $2, notify_attempts = notify_attempts + 1
             WHERE id = $3",
        )
        .bind(state)
        .bind(next)
        .bind(job_id)
        .execute(&self.pool)
        .await?;
        Ok(())
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
}

#[async_trait]
impl MessageLogStore for PostgresStore {
    async fn append_log(&self, records: &[LogRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        for chunk in records.chunks(LOG_ROWS_PER_INSERT) {
            log_insert::<Postgres>(chunk)
                .build()
                .execute(&self.pool)
                .await?;
        }
        Ok(())
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
        self.pool.close().await;
    }
}
