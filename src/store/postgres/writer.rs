//! PostgreSQL's group commit: the request path's writes (kick-off reservations and outcomes, the
//! poller's updates) go to one writer thread that owns its own connection, takes everything queued,
//! and commits it at once: one WAL flush and one round trip for the whole group (its reservations,
//! outcomes and message-log records are one statement, [`WRITE_BATCH`], outside any transaction),
//! instead of a pooled autocommit round trip and a flush per write. A group that also holds the
//! poller's writes, or only log records, is one transaction around that statement and the rest.
//! Callers hear back once the group is committed. The thread runs its own single-threaded runtime, so none of this
//! work lands on the gateway's runtimes.
//!
//! A group that fails is rolled back and each of its writes runs again in a transaction of its own,
//! so one bad write (or a deadlock with another replica) fails only itself. A group of message-log
//! records alone commits with `synchronous_commit = off`: nobody waits on it, and a crash can lose
//! the log's last moments, never a job.

use super::super::{
    AttemptOutcome, Claim, CommitStats, Decision, FailureCount, JobState, LogRecord, NewJob,
    NotifyUpdate, StatusColumns, StatusUpdate, StoreError,
};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most writes committed in one transaction.
const MAX_GROUP: usize = 512;

/// Connections committing groups at once: while one waits for its commit (the WAL flush), the next
/// group runs on another.
const WRITERS: usize = 3;

/// One write, queued for the writer thread.
#[derive(Debug)]
pub(super) enum Op {
    Claim(NewJob, Duration),
    Finish(Uuid, Uuid, AttemptOutcome),
    Status(Uuid, StatusUpdate, DateTime<Utc>),
    Release(Uuid, String),
    Notify(Uuid, NotifyUpdate),
    AppendLog(Vec<LogRecord>),
}

impl Op {
    /// Whether the caller must not hear back before the write is on disk: everything but the
    /// message log's records.
    fn durable(&self) -> bool {
        !matches!(self, Op::AppendLog(_))
    }
}

#[derive(Debug)]
pub(super) enum Done {
    Claim(Claim),
    Nothing,
}

#[derive(Debug)]
pub(super) struct Write {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// The writer's connections: `url` with settings that keep every statement on its key's index.
///
/// Every statement the writer runs finds its rows by a key (a job's id, the reservation's unique
/// key, an attempt's), so the right plan is always an index scan and a nested loop, and the writer's
/// connections plan each statement once and keep that plan (`force_generic_plan`): planning had been
/// a sixth of PostgreSQL's CPU per kick-off when every execution was planned afresh. A generic plan
/// made from the statistics of the moment can be wrong for good (made while `jobs` was empty, the
/// group's UPDATE hashed a sequential scan of the whole table, seen in a profile as the backend's
/// whole core), so sequential scans and hash and merge joins are off on these connections: the
/// planner takes the index whatever the statistics say. Reads, the poller's claims and pruning run
/// on the pool with PostgreSQL's defaults.
pub(super) fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    use std::str::FromStr;
    Ok(PgConnectOptions::from_str(url)?.options([
        ("plan_cache_mode", "force_generic_plan"),
        ("enable_seqscan", "off"),
        ("enable_hashjoin", "off"),
        ("enable_mergejoin", "off"),
    ]))
}

/// Starts the writer thread with a connection made from `options`; fails when that connection
/// cannot be made. The thread ends when every sender is gone.
pub(super) async fn start(
    options: PgConnectOptions,
    stats: std::sync::Arc<CommitStats>,
) -> Result<mpsc::Sender<Write>, StoreError> {
    let (tx, rx) = mpsc::channel(4096);
    let (ready, started) = oneshot::channel();
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready.send(Err(StoreError::Unavailable(format!(
                        "cannot start the store writer: {e}"
                    ))));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut conns = Vec::with_capacity(WRITERS);
                for _ in 0..WRITERS {
                    match PgConnection::connect_with(&options).await {
                        Ok(conn) => conns.push(conn),
                        Err(e) => {
                            let _ = ready.send(Err(e.into()));
                            return;
                        }
                    }
                }
                let _ = ready.send(Ok(()));
                let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
                futures_util::future::join_all(
                    conns
                        .into_iter()
                        .map(|conn| run(conn, options.clone(), rx.clone(), &stats)),
                )
                .await;
            });
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the store writer: {e}")))?;
    started
        .await
        .map_err(|_| StoreError::Unavailable("the store writer did not start".into()))??;
    Ok(tx)
}

/// One of the writer's connections: takes the next group from the shared queue, commits it, answers.
async fn run(
    conn: PgConnection,
    options: PgConnectOptions,
    rx: std::sync::Arc<tokio::sync::Mutex<mpsc::Receiver<Write>>>,
    stats: &CommitStats,
) {
    let mut conn = Some(conn);
    let mut group: Vec<Write> = Vec::with_capacity(MAX_GROUP);
    loop {
        // The queue is held while waiting for writes: the next group forms there while the other
        // connections commit theirs.
        if rx.lock().await.recv_many(&mut group, MAX_GROUP).await == 0 {
            break;
        }
        if conn.is_none() {
            match PgConnection::connect_with(&options).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::error!(message = "The store writer cannot reach PostgreSQL.", error = %e);
                    let message = e.to_string();
                    for w in group.drain(..) {
                        let _ = w.reply.send(Err(StoreError::Unavailable(message.clone())));
                    }
                    // Not a busy loop while the database is away.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let durable = group.iter().any(|w| w.op.durable());
        let (results, failed) = match commit_group(c, &group, durable).await {
            Ok(results) => {
                stats.record(durable, group.len());
                (results, false)
            }
            Err(e) => {
                if group.len() > 1 {
                    tracing::debug!(message = "A group commit failed; its writes run one by one.", error = %e);
                }
                let mut results = Vec::with_capacity(group.len());
                for w in &group {
                    let result = commit_one(c, &w.op).await;
                    if result.is_ok() {
                        stats.record(true, 1);
                    }
                    results.push(result);
                }
                (results, true)
            }
        };
        for (w, result) in group.drain(..).zip(results) {
            let _ = w.reply.send(result);
        }
        // A connection that failed under us is replaced before the next group.
        if failed && c.ping().await.is_err() {
            conn = None;
        }
    }
}

/// One write in a transaction of its own.
async fn commit_one(conn: &mut PgConnection, op: &Op) -> Result<Done, StoreError> {
    let mut tx = conn.begin().await?;
    let done = apply(&mut tx, op).await?;
    tx.commit().await?;
    Ok(done)
}

/// One write, on its own (the rare claims that meet an existing row, the poller's updates).
async fn apply(conn: &mut PgConnection, op: &Op) -> Result<Done, StoreError> {
    Ok(match op {
        Op::Claim(job, stale) => Done::Claim(claim(conn, job, *stale).await?),
        Op::Finish(job, attempt, outcome) => {
            let outcome = Batch {
                outcomes: vec![(*job, *attempt, outcome)],
                ..Batch::default()
            };
            write_batch(conn, outcome).await?;
            Done::Nothing
        }
        Op::Status(job, update, at) => {
            record_status(conn, *job, update, *at).await?;
            Done::Nothing
        }
        Op::Release(job, worker) => {
            sqlx::query(
                "UPDATE jobs SET claimed_by = NULL, claim_until = NULL WHERE id = $1 AND claimed_by = $2",
            )
            .bind(job)
            .bind(worker)
            .execute(&mut *conn)
            .await?;
            Done::Nothing
        }
        Op::Notify(job, update) => {
            let (state, next) = match update {
                NotifyUpdate::Sent => ("sent", None),
                NotifyUpdate::RetryAt(t) => ("pending", Some(*t)),
                NotifyUpdate::GaveUp => ("failed", None),
            };
            sqlx::query(
                "UPDATE jobs SET notify_state = $1, notify_next_at = $2, notify_attempts = notify_attempts + 1
                 WHERE id = $3",
            )
            .bind(state)
            .bind(next)
            .bind(job)
            .execute(&mut *conn)
            .await?;
            Done::Nothing
        }
        Op::AppendLog(records) => {
            let logs = Batch {
                logs: records.iter().collect(),
                ..Batch::default()
            };
            write_batch(conn, logs).await?;
            Done::Nothing
        }
    })
}

/// The whole group in one transaction: every new reservation in one `INSERT`, every attempt outcome
/// in one `UPDATE` and one `INSERT`, every message-log record in one `INSERT`, the rest one statement
/// each; `Err` when the transaction failed (nothing of it was kept).
async fn commit_group(
    conn: &mut PgConnection,
    group: &[Write],
    durable: bool,
) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
    let mut results: Vec<Result<Done, StoreError>> =
        group.iter().map(|_| Ok(Done::Nothing)).collect();
    let (mut claims, mut finishes, mut logs, mut rest) = (vec![], vec![], vec![], vec![]);
    for (i, w) in group.iter().enumerate() {
        match &w.op {
            Op::Claim(job, stale) => claims.push((i, job, *stale)),
            Op::Finish(job, attempt, outcome) => finishes.push((*job, *attempt, outcome)),
            Op::AppendLog(records) => logs.extend(records),
            _ => rest.push(i),
        }
    }
    let claimed: Vec<&NewJob> = claims.iter().map(|(_, job, _)| *job).collect();
    let batch = Batch {
        jobs: claimed,
        outcomes: finishes,
        logs,
    };
    if durable && rest.is_empty() {
        // The common group (reservations, outcomes, log records): one statement outside any
        // transaction, so one round trip and one commit. A reservation that met an existing row
        // then goes through the whole claim in a transaction of its own; its failure is its own.
        let inserted = write_batch(conn, batch).await?;
        for (i, job, _) in claims {
            results[i] = if inserted.contains(&job.id) {
                Ok(Done::Claim(Claim::New))
            } else {
                commit_one(conn, &group[i].op).await
            };
        }
        return Ok(results);
    }
    let mut tx = conn.begin().await?;
    // A group of message-log records alone does not wait for its WAL flush (PostgreSQL's WAL writer
    // makes it durable within moments, and in order: a crash loses at most those last records).
    if !durable {
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
    }
    // A reservation that meets an existing row (a retried envelope, or two of the same in this
    // group) goes through the whole claim on its own.
    let inserted = write_batch(&mut tx, batch).await?;
    for (i, job, stale) in claims {
        results[i] = Ok(Done::Claim(if inserted.contains(&job.id) {
            Claim::New
        } else {
            claim(&mut tx, job, stale).await?
        }));
    }
    for i in rest {
        results[i] = Ok(apply(&mut tx, &group[i].op).await?);
    }
    tx.commit().await?;
    Ok(results)
}

/// What one statement writes: new reservations, attempt outcomes and message-log records.
#[derive(Default)]
struct Batch<'a> {
    jobs: Vec<&'a NewJob>,
    outcomes: Vec<(Uuid, Uuid, &'a AttemptOutcome)>,
    logs: Vec<&'a LogRecord>,
}

/// Every write of a group in one statement. `new`: the reservations whose (source, Log ID,
/// fingerprint) is not taken yet; `done` and `tried`: each outcome on its job and as its attempt's
/// record; `logged`: the message log's records. Each part is one `unnest` of arrays, empty when the
/// group has nothing of its kind, so this is one prepared statement whatever the group holds. An
/// outcome's job was reserved by an earlier, committed group (its kick-off called the EHR after
/// that commit), so no part touches a row another part writes. Every parameter carries its type,
/// as the statement's own text says which arrays it takes.
const WRITE_BATCH: &str = "
WITH new AS (
    INSERT INTO jobs (id, source_key, log_id, attempt_id, attempts, destination, environment, event_type,
                      group_id, fingerprint, state, created_at, updated_at, request)
    SELECT id, source_key, log_id, attempt_id, 1, destination, environment, event_type,
           group_id, fingerprint, 'pending', $10::timestamptz, $10::timestamptz, request
    FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[],
                $8::text[], $9::text[], $11::text[])
         WITH ORDINALITY AS t(id, source_key, log_id, attempt_id, destination, environment, event_type,
                              group_id, fingerprint, request, n)
    ORDER BY n
    ON CONFLICT (source_key, log_id, fingerprint) DO NOTHING
    RETURNING id
), done AS (
    UPDATE jobs SET state = t.state, upstream_status_url = COALESCE(t.url, jobs.upstream_status_url),
                    error_code = t.error, updated_at = $10::timestamptz,
                    next_poll_at = CASE WHEN t.state = 'accepted' THEN $10::timestamptz ELSE NULL END
    FROM unnest($12::uuid[], $13::uuid[], $14::text[], $15::text[], $16::text[])
         AS t(id, attempt, state, url, error)
    WHERE jobs.id = t.id AND jobs.attempt_id = t.attempt
), tried AS (
    INSERT INTO job_attempts (job_id, attempt_id, started_at, finished_at, outcome, upstream_status, error_code)
    SELECT job_id, attempt_id, $10::timestamptz, $10::timestamptz, outcome, upstream_status, error_code
    FROM unnest($12::uuid[], $13::uuid[], $14::text[], $17::int4[], $16::text[])
         AS t(job_id, attempt_id, outcome, upstream_status, error_code)
    ON CONFLICT (job_id, attempt_id) DO UPDATE SET finished_at = EXCLUDED.finished_at,
        outcome = EXCLUDED.outcome, upstream_status = EXCLUDED.upstream_status,
        error_code = EXCLUDED.error_code
), logged AS (
    INSERT INTO message_log (kind, log_id, attempt_id, at, source, destination, environment,
        event_type, method, route, gateway_status, upstream_status, error_code, duration_ms, job_id,
        upstream_request_id)
    SELECT kind, log_id, attempt_id, at, source, destination, environment, event_type, method, route,
           gateway_status, upstream_status, error_code, duration_ms, job_id, upstream_request_id
    FROM unnest($18::text[], $19::uuid[], $20::uuid[], $21::timestamptz[], $22::text[], $23::text[],
                $24::text[], $25::text[], $26::text[], $27::text[], $28::int4[], $29::int4[],
                $30::text[], $31::float8[], $32::uuid[], $33::text[])
         WITH ORDINALITY AS t(kind, log_id, attempt_id, at, source, destination, environment,
                              event_type, method, route, gateway_status, upstream_status,
                              error_code, duration_ms, job_id, upstream_request_id, n)
    ORDER BY n
)
SELECT id FROM new";

/// Writes `batch` in one statement; the ids of the reservations inserted.
async fn write_batch(
    conn: &mut PgConnection,
    mut batch: Batch<'_>,
) -> Result<HashSet<Uuid>, StoreError> {
    let now = Utc::now();
    // One order for every replica's writer, so two groups inserting the same keys (or finishing
    // the same jobs) wait for one another instead of deadlocking.
    let jobs = &mut batch.jobs;
    jobs.sort_by(|a, b| {
        (&a.source_key, a.log_id, &a.fingerprint).cmp(&(&b.source_key, b.log_id, &b.fingerprint))
    });
    let column = |f: fn(&NewJob) -> &str| jobs.iter().map(|j| f(j)).collect::<Vec<&str>>();
    let mut rows: Vec<AttemptRow<'_>> = batch
        .outcomes
        .iter()
        .map(|(job, attempt, outcome)| {
            let (state, url, error, status) = super::super::attempt_columns(outcome);
            (*job, *attempt, state, url, error, status.map(i32::from))
        })
        .collect();
    // One row per attempt (the last word wins, as it would one statement at a time).
    rows.sort_by_key(|r| (r.0, r.1));
    rows.dedup_by(|later, earlier| {
        let same = (later.0, later.1) == (earlier.0, earlier.1);
        if same {
            std::mem::swap(later, earlier);
        }
        same
    });
    let logs = &batch.logs;
    let text = |f: fn(&LogRecord) -> Option<&str>| logs.iter().map(|r| f(r)).collect::<Vec<_>>();
    let status = |f: fn(&LogRecord) -> Option<u16>| {
        logs.iter().map(|r| f(r).map(i32::from)).collect::<Vec<_>>()
    };
    let inserted = sqlx::query(WRITE_BATCH)
        .bind(jobs.iter().map(|j| j.id).collect::<Vec<_>>())
        .bind(column(|j| j.source_key.as_str()))
        .bind(jobs.iter().map(|j| j.log_id).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.attempt_id).collect::<Vec<_>>())
        .bind(column(|j| j.destination.as_str()))
        .bind(column(|j| j.environment.as_str()))
        .bind(column(|j| j.event_type.as_str()))
        .bind(
            jobs.iter()
                .map(|j| j.group_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(column(|j| j.fingerprint.as_str()))
        .bind(now)
        .bind(
            jobs.iter()
                .map(|j| j.request.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.3).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.4).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.5).collect::<Vec<_>>())
        .bind(text(|r| Some(r.kind.as_str())))
        .bind(logs.iter().map(|r| r.log_id).collect::<Vec<_>>())
        .bind(logs.iter().map(|r| r.attempt_id).collect::<Vec<_>>())
        .bind(logs.iter().map(|r| r.time).collect::<Vec<_>>())
        .bind(text(|r| r.source.as_deref()))
        .bind(text(|r| r.destination.as_deref()))
        .bind(text(|r| r.environment.as_deref()))
        .bind(text(|r| r.event_type.as_deref()))
        .bind(text(|r| r.method.as_deref()))
        .bind(text(|r| Some(r.route.as_str())))
        .bind(status(|r| r.gateway_status))
        .bind(status(|r| r.upstream_status))
        .bind(text(|r| r.error_code.as_deref()))
        .bind(logs.iter().map(|r| r.duration_ms).collect::<Vec<_>>())
        .bind(logs.iter().map(|r| r.job_id).collect::<Vec<_>>())
        .bind(text(|r| r.upstream_request_id.as_deref()))
        .fetch_all(&mut *conn)
        .await?;
    inserted
        .iter()
        .map(|r| r.try_get::<Uuid, _>("id").map_err(StoreError::from))
        .collect()
}

/// Reserves `job`, or tells what became of an earlier reservation of the same request.
pub(super) async fn claim(
    conn: &mut PgConnection,
    job: &NewJob,
    stale_after: Duration,
) -> Result<Claim, StoreError> {
    // Twice at most: a request whose job ended retires that row and is then inserted afresh.
    for _ in 0..2 {
        let now = Utc::now();
        let one = Batch {
            jobs: vec![job],
            ..Batch::default()
        };
        if write_batch(&mut *conn, one).await?.contains(&job.id) {
            return Ok(Claim::New);
        }
        let row = sqlx::query(
            "SELECT * FROM jobs WHERE source_key = $1 AND log_id = $2 AND fingerprint = $3",
        )
        .bind(&job.source_key)
        .bind(job.log_id)
        .bind(&job.fingerprint)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(existing) = row.as_ref().map(super::super::rows::job).transpose()? else {
            return Ok(Claim::InFlight);
        };
        // Every update is conditional on the state read, so two replicas racing agree on one winner.
        match super::super::decide(&existing, stale_after, job.retry_unknown) {
            Decision::Settled(claim) => return Ok(claim),
            Decision::MarkUnknown => {
                super::mark_unknown(&mut *conn, Some(existing.id), None).await?;
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
                .execute(&mut *conn)
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

/// An attempt's outcome as columns: job, attempt, state, status URL, error code, EHR status.
type AttemptRow<'a> = (
    Uuid,
    Uuid,
    &'static str,
    Option<&'a str>,
    Option<&'a str>,
    Option<i32>,
);

async fn record_status(
    conn: &mut PgConnection,
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
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// The plan the writer's connection keeps for the group's statement, prepared in a database
    /// whose tables are empty (the statistics that once made its UPDATE a sequential scan of `jobs`).
    async fn kept_plan(url: &str) -> Result<String, StoreError> {
        let mut conn = PgConnection::connect_with(&connect_options(url)?).await?;
        sqlx::raw_sql(&format!("PREPARE batch AS {WRITE_BATCH}"))
            .execute(&mut conn)
            .await?;
        // Empty arrays for every part; $10 is the time.
        let args: Vec<&str> = (1..=33)
            .map(|n| if n == 10 { "now()" } else { "'{}'" })
            .collect();
        let lines: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN EXECUTE batch({})", args.join(", ")))
                .fetch_all(&mut conn)
                .await?;
        Ok(lines.join("\n"))
    }

    /// Runs `read` on a new, empty database holding the store's tables, then drops the database;
    /// `None` where no PostgreSQL is configured for the tests.
    async fn on_scratch_database<F, Fut>(read: F) -> Option<Result<String, StoreError>>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<String, StoreError>>,
    {
        let admin = match std::env::var("FHIRGATE_TEST_POSTGRES_URL") {
            Ok(admin) if !admin.is_empty() => admin,
            _ => {
                eprintln!("PostgreSQL only: set FHIRGATE_TEST_POSTGRES_URL");
                return None;
            }
        };
        // Named as the integration tests name theirs, so that one left by a killed run is dropped
        // by a later one (tests/api/helpers: `test_databases`).
        let now = chrono::Utc::now().timestamp();
        let name = format!("fhirgate_test_{now}_{}", Uuid::new_v4().simple());
        let mut admin_conn = PgConnection::connect(&admin).await.expect("connect");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin_conn)
            .await
            .expect("create a test database");
        let mut url = url::Url::parse(&admin).expect("FHIRGATE_TEST_POSTGRES_URL is a URL");
        url.set_path(&name);
        let read = async {
            let store = super::super::PostgresStore::open(url.as_str(), 2).await?;
            store.close().await;
            read(url.to_string()).await
        }
        .await;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin_conn)
            .await
            .expect("drop the test database");
        Some(read)
    }

    #[tokio::test]
    async fn the_writers_kept_plan_finds_jobs_by_their_key_even_when_made_on_an_empty_table() {
        let Some(plan) = on_scratch_database(|url| async move { kept_plan(&url).await }).await
        else {
            return;
        };
        let plan = plan.expect("the plan was read");

        assert!(plan.contains("Index Scan using jobs_pkey"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(!plan.contains("Hash"), "{plan}");
    }

    #[tokio::test]
    async fn the_pollers_claim_reads_each_kind_of_due_job_in_its_index_order_not_all_of_them() {
        let explained = on_scratch_database(|url| async move {
            let mut conn = PgConnection::connect(&url).await?;
            // A backlog: 20,000 jobs due a poll, the statistics knowing it.
            sqlx::raw_sql(
                "INSERT INTO jobs (id, source_key, log_id, attempt_id, destination, environment,
                    event_type, fingerprint, state, created_at, updated_at, next_poll_at)
                 SELECT gen_random_uuid(), 's', gen_random_uuid(), gen_random_uuid(), 'd', 'e',
                    'group-export', 'f' || i, 'accepted', now(), now(),
                    now() - interval '1 hour' + i * interval '1 ms'
                 FROM generate_series(1, 20000) i;
                 ANALYZE jobs;",
            )
            .execute(&mut conn)
            .await?;
            let lines: Vec<String> = sqlx::query_scalar(&format!(
                "EXPLAIN {}",
                super::super::CLAIM_DUE
                    .replace("$1", "'w'")
                    .replace("$2", "now() + interval '1 minute'")
                    .replace("$3", "now()")
                    .replace("$4", "64")
            ))
            .fetch_all(&mut conn)
            .await?;
            let notify: String = sqlx::query_scalar(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'jobs_notify'",
            )
            .fetch_one(&mut conn)
            .await?;
            Ok(format!("{}\n{notify}", lines.join("\n")))
        })
        .await;
        let Some(plan) = explained else {
            return;
        };
        let plan = plan.expect("the plan was read");

        assert!(plan.contains("Index Scan using jobs_due"), "{plan}");
        assert!(plan.contains("Index Scan using jobs_notify"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(!plan.contains("Bitmap"), "{plan}");
        // Only jobs with a notification waiting are in jobs_notify: a reservation adds nothing to it.
        assert!(
            plan.ends_with("WHERE (notify_state = 'pending'::text)"),
            "{plan}"
        );
    }
}
