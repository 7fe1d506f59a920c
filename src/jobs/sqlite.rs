//! The embedded job store: one SQLite file in WAL mode, created when missing.

use super::{
    AttemptOutcome, Claim, Job, JobState, JobStore, NewJob, StoreError, parse_time, parse_uuid,
};
use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `url` and runs the migrations.
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
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))?;
        Ok(SqliteStore { pool })
    }

    fn row_to_job(row: &SqliteRow) -> Result<Job, StoreError> {
        let state: String = row.try_get("state")?;
        Ok(Job {
            id: parse_uuid(row.try_get("id")?)?,
            source_key: row.try_get("source_key")?,
            log_id: parse_uuid(row.try_get("log_id")?)?,
            attempt_id: parse_uuid(row.try_get("attempt_id")?)?,
            attempts: row.try_get("attempts")?,
            destination: row.try_get("destination")?,
            environment: row.try_get("environment")?,
            event_type: row.try_get("event_type")?,
            group_id: row.try_get("group_id")?,
            fingerprint: row.try_get("fingerprint")?,
            state: JobState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?,
            upstream_status_url: row.try_get("upstream_status_url")?,
            error_code: row.try_get("error_code")?,
            created_at: parse_time(row.try_get("created_at")?)?,
            updated_at: parse_time(row.try_get("updated_at")?)?,
        })
    }

    async fn by_request(&self, job: &NewJob) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM jobs WHERE source_key = ?1 AND log_id = ?2 AND fingerprint = ?3",
        )
        .bind(&job.source_key)
        .bind(job.log_id.to_string())
        .bind(&job.fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::row_to_job).transpose()
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn claim(&self, job: &NewJob, stale_after: Duration) -> Result<Claim, StoreError> {
        let now = now();
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, source_key, log_id, attempt_id, attempts, destination, environment, event_type,
                               group_id, fingerprint, state, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?10)
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
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Claim::New);
        }
        let Some(existing) = self.by_request(job).await? else {
            // Deleted between the two statements: treat as in flight; the partner retries.
            return Ok(Claim::InFlight);
        };
        let stale = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
        let retryable = match existing.state {
            JobState::Accepted => return Ok(Claim::Existing(Box::new(existing))),
            JobState::Failed => true,
            JobState::Pending => Utc::now() - existing.updated_at > stale,
        };
        if !retryable {
            return Ok(Claim::InFlight);
        }
        // Compare-and-set on the row as read, so two retries cannot both win.
        let updated = sqlx::query(
            "UPDATE jobs SET state = 'pending', attempt_id = ?1, attempts = attempts + 1, updated_at = ?2,
                             error_code = NULL
             WHERE id = ?3 AND state = ?4 AND attempt_id = ?5",
        )
        .bind(job.attempt_id.to_string())
        .bind(&now)
        .bind(existing.id.to_string())
        .bind(existing.state.as_str())
        .bind(existing.attempt_id.to_string())
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 1 {
            Ok(Claim::Retry {
                job_id: existing.id,
                attempt: existing.attempts + 1,
            })
        } else {
            Ok(Claim::InFlight)
        }
    }

    async fn finish_attempt(
        &self,
        job_id: Uuid,
        attempt_id: Uuid,
        outcome: &AttemptOutcome,
    ) -> Result<(), StoreError> {
        let now = now();
        let (state, url, error, upstream_status) = match outcome {
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
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE jobs SET state = ?1, upstream_status_url = COALESCE(?2, upstream_status_url), error_code = ?3,
                             updated_at = ?4
             WHERE id = ?5 AND attempt_id = ?6",
        )
        .bind(state)
        .bind(url)
        .bind(error)
        .bind(&now)
        .bind(job_id.to_string())
        .bind(attempt_id.to_string())
        .execute(&mut *tx)
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
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get(&self, job_id: Uuid) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?1")
            .bind(job_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::row_to_job).transpose()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
