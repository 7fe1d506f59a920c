//! The SQLite store's one writer: a dedicated OS thread owning the only write connection (rusqlite,
//! prepared statements cached). Callers queue writes; the thread takes everything queued, runs it in
//! one transaction, commits once (`synchronous = FULL`: on disk before anyone hears back) and answers
//! every caller. Concurrent kick-offs, poller updates and message-log batches share one commit and
//! one sync of the write-ahead log (`fdatasync`: SQLite is built with `HAVE_FDATASYNC`, see
//! `.cargo/config.toml`); a group of message-log records alone commits
//! without one (`synchronous = NORMAL`: the next synced commit writes it down with its own, so a
//! crash can lose the log's last moments, never a job). Nothing of this runs on the async
//! runtimes: a profile of the earlier design (every statement a round trip between the runtime and
//! sqlx's connection thread) showed the thread hand-offs, not SQLite, as the cost.

use super::super::{
    AttemptOutcome, Claim, CommitStats, Decision, FailureCount, Job, JobState, LogRecord, NewJob,
    NotifyUpdate, StatusColumns, StatusUpdate, StoreError,
};
use super::ts;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;

/// One write, queued for the writer thread.
#[derive(Debug)]
pub(super) enum Op {
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
    PruneJobs(DateTime<Utc>, u32),
    MarkUnknown(DateTime<Utc>),
    Secret(String, String),
}

impl Op {
    /// Whether the caller must not hear back before the write is on disk: everything but the
    /// message log's records and pruning (a crash may lose the last moments of the log, or undo a
    /// prune that the next one does again; never a job, an attempt or a spent assertion id).
    fn durable(&self) -> bool {
        !matches!(
            self,
            Op::AppendLog(_) | Op::PruneLogs(..) | Op::PruneJobs(..)
        )
    }
}

#[derive(Debug)]
pub(super) enum Done {
    Claim(Claim),
    Jobs(Vec<Job>),
    Fresh(bool),
    Count(u64),
    Text(String),
    Nothing,
}

#[derive(Debug)]
pub(super) struct Write {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Done, StoreError>>,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// Opens the write connection at `path` as the store needs it.
pub(super) fn connect(path: &std::path::Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk before the partner hears 202.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // The checkpointer thread copies the log into the database (see `checkpointer`).
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    // 16 MiB of pages: the hot pages of the tables and indexes stay in memory (a larger cache costs
    // more at the end of every transaction, when SQLite walks it).
    conn.pragma_update(None, "cache_size", -16_384)?;
    // A statement that changes many rows inside a group keeps the pages it changes in a statement
    // journal, on disk in a temporary file (/var/tmp or /tmp) past 64 KiB: at saturation one was
    // created and unlinked every few groups and took two writes a kick-off (strace: the writer's
    // pwrite calls fell by a third without it; kick-offs/s and CPU per kick-off did not move). In
    // memory it is a copy of at most one group's pages.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Starts the writer thread on `conn`; it ends when every sender is gone.
pub(super) fn start(
    conn: Connection,
    stats: std::sync::Arc<CommitStats>,
) -> Result<mpsc::Sender<Write>, StoreError> {
    let (tx, rx) = mpsc::channel(4096);
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || run(conn, rx, &stats))
        .map_err(|e| StoreError::Unavailable(format!("cannot start the store writer: {e}")))?;
    Ok(tx)
}

/// How often the checkpointer copies the write-ahead log into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Frames in the write-ahead log (4 KiB pages each) past which it is started over.
const RESTART_FRAMES: i64 = 4_096;

/// What a WAL file is cut back to when it restarts (it only grows otherwise).
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Copies committed pages from the WAL into the database file on its own connection and thread,
/// so the writer never does it inline; ends when `stop`'s sender is dropped.
///
/// A `PASSIVE` checkpoint never waits for, nor holds up, the writer or readers, but under a steady
/// stream of commits it never catches up with the end of the log, and SQLite starts the log over only
/// when one has: the WAL grew by 140 MB/s at 6,000 kick-offs/s, and every write into new file space
/// cost the writer a page zeroed by the kernel (a tenth of its time in perf). So when the log has
/// grown past [`RESTART_FRAMES`], the checkpointer makes a second pass (which copies only what was
/// committed during the first) and asks the writer to finish the job between two groups (`restart`):
/// the writer copies the last few frames itself (passively too: it waits for no reader), with no
/// commit of its own in the way, and its next commit writes from the start of the log again (cut back
/// to [`WAL_SIZE_LIMIT`]; should a reader still be on the old frames, the next round asks again).
fn checkpointer(
    path: std::path::PathBuf,
    stop: std::sync::mpsc::Receiver<()>,
    restart: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let conn = match Connection::open(&path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(message = "The store's checkpointer could not open the database.", error = %e);
            return;
        }
    };
    let _ = conn.busy_timeout(Duration::from_secs(5));
    let passive = || conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY)
    {
        match passive() {
            Ok(frames) if frames >= RESTART_FRAMES => {
                if passive().is_ok() {
                    restart.store(true, std::sync::atomic::Ordering::Release);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(message = "WAL checkpoint failed.", error = %e),
        }
    }
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Write>, stats: &CommitStats) {
    let (_stop_checkpoints, stop) = std::sync::mpsc::channel::<()>();
    let restart = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(path) = conn.path().map(std::path::PathBuf::from) {
        let restart = restart.clone();
        let spawned = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || checkpointer(path, stop, restart));
        if let Err(e) = spawned {
            tracing::warn!(message = "No checkpointer thread; the writer checkpoints inline.", error = %e);
            let _ = conn.pragma_update(None, "wal_autocheckpoint", 1000);
        }
    }
    let mut batch: Vec<Write> = Vec::with_capacity(MAX_BATCH);
    // The connection opens with `synchronous = FULL` (see `connect`).
    let mut synced = true;
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        // A group of message-log writes only commits without waiting for the disk: the next group
        // that holds a job write syncs the log file, and with it every frame before its own.
        let durable = batch.iter().any(|w| w.op.durable());
        if durable != synced {
            // Set, then read back: what the metrics count and what a job write relies on is the mode
            // SQLite says it is in (FULL is 2, EXTRA 3).
            let mode = if durable { "FULL" } else { "NORMAL" };
            synced = match conn
                .pragma_update(None, "synchronous", mode)
                .and_then(|()| conn.pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0)))
            {
                Ok(level) => level >= 2,
                Err(e) => {
                    tracing::warn!(message = "Could not set the store's synchronous mode.", error = %e);
                    false
                }
            };
            // A job write is never answered before it is on disk.
            if durable && !synced {
                tracing::error!(
                    message =
                        "The store's commits could not be made durable again; the group fails."
                );
                for w in batch.drain(..) {
                    let _ = w.reply.send(Err(StoreError::Unavailable(
                        "the job store could not make its commit durable".into(),
                    )));
                }
                continue;
            }
        }
        let mut results = Vec::with_capacity(batch.len());
        // No savepoint per write: a profile showed SQLite copying every page a group touched into
        // each savepoint's journal (the writes of a group share the tables' last pages). A failed
        // statement undoes itself; a failure that aborts the transaction fails the whole group.
        let committed = (|| -> Result<(), rusqlite::Error> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for w in &batch {
                results.push(apply(&tx, &w.op));
            }
            tx.commit()
        })();
        match committed {
            Ok(()) => {
                stats.record(synced, batch.len());
                for (w, result) in batch.drain(..).zip(results) {
                    let _ = w.reply.send(result);
                }
                // Between groups, in no transaction: catch up with the end of the log when asked, so
                // the next commit starts it over (see `checkpointer`).
                if restart.swap(false, std::sync::atomic::Ordering::AcqRel)
                    && let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                {
                    tracing::warn!(message = "WAL restart failed.", error = %e);
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
}

/// Rows per message-log `INSERT`, largest first: a batch goes in as few statements as these sizes
/// make it. `message_log` is `AUTOINCREMENT`, so each statement also reads and rewrites its row of
/// `sqlite_sequence` (a B-tree write of its own): one statement per record was two of a kick-off's
/// 26 B-tree writes. 64 rows of 16 values stay far below SQLite's 32,766 bound variables.
const LOG_ROWS_PER_INSERT: [usize; 4] = [64, 16, 4, 1];

/// `INSERT INTO message_log … VALUES (…), (…)` for each size of [`LOG_ROWS_PER_INSERT`], in its order
/// (made once: the 64-row one has 1,024 placeholders).
fn log_insert_sql() -> &'static [String; 4] {
    static SQL: std::sync::OnceLock<[String; 4]> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        LOG_ROWS_PER_INSERT.map(|rows| {
            let mut sql = String::from(
                "INSERT INTO message_log (kind, log_id, attempt_id, at, source, destination, environment,
                    event_type, method, route, gateway_status, upstream_status, error_code, duration_ms,
                    job_id, upstream_request_id) VALUES ",
            );
            let row_sql = |row: usize| {
                let values: Vec<String> = (1..=16).map(|c| format!("?{}", row * 16 + c)).collect();
                format!("({})", values.join(", "))
            };
            let rows: Vec<String> = (0..rows).map(row_sql).collect();
            sql.push_str(&rows.join(", "));
            sql
        })
    })
}

/// Writes `records` in their order, each chunk of them one multi-row `INSERT` (prepared once per
/// size and kept in the connection's statement cache).
fn append_log(conn: &Connection, records: &[LogRecord]) -> Result<(), StoreError> {
    let mut rest = records;
    while !rest.is_empty() {
        // The largest size that fits (1 always does).
        let size = LOG_ROWS_PER_INSERT
            .iter()
            .position(|&n| n <= rest.len())
            .unwrap_or(LOG_ROWS_PER_INSERT.len() - 1);
        let rows = LOG_ROWS_PER_INSERT[size];
        let (chunk, tail) = rest.split_at(rows);
        let mut insert = conn.prepare_cached(&log_insert_sql()[size])?;
        // The values written as text, made first so the bound values can borrow them.
        let texts: Vec<[String; 3]> = chunk
            .iter()
            .map(|r| [r.log_id.to_string(), r.attempt_id.to_string(), ts(r.time)])
            .collect();
        let kinds: Vec<&str> = chunk.iter().map(|r| r.kind.as_str()).collect();
        let job_ids: Vec<Option<String>> = chunk
            .iter()
            .map(|r| r.job_id.map(|j| j.to_string()))
            .collect();
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(rows * 16);
        let with_values = chunk.iter().zip(&kinds).zip(&texts).zip(&job_ids);
        for (((r, kind), [log_id, attempt_id, at]), job_id) in with_values {
            values.extend([
                kind as &dyn rusqlite::ToSql,
                log_id,
                attempt_id,
                at,
                &r.source,
                &r.destination,
                &r.environment,
                &r.event_type,
                &r.method,
                &r.route,
                &r.gateway_status,
                &r.upstream_status,
                &r.error_code,
                &r.duration_ms,
                job_id,
                &r.upstream_request_id,
            ]);
        }
        insert.execute(rusqlite::params_from_iter(values))?;
        rest = tail;
    }
    Ok(())
}

fn uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn time(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A row with its statement's column indexes by name: rusqlite finds a column by name by asking
/// SQLite for every column's name in turn, which a profile showed costing more than the read itself
/// for `SELECT *` of a job.
struct Named<'a> {
    row: &'a rusqlite::Row<'a>,
    columns: &'a std::collections::HashMap<String, usize>,
}

/// Column indexes by name for `stmt`.
fn columns(stmt: &rusqlite::Statement<'_>) -> std::collections::HashMap<String, usize> {
    stmt.column_names()
        .into_iter()
        .enumerate()
        .map(|(i, n)| (n.to_owned(), i))
        .collect()
}

impl Named<'_> {
    fn get<T: rusqlite::types::FromSql>(&self, col: &str) -> Result<T, StoreError> {
        let i = *self
            .columns
            .get(col)
            .ok_or_else(|| StoreError::Corrupt(format!("no column {col}")))?;
        Ok(self.row.get(i)?)
    }
}

impl super::super::rows::ReadRow for Named<'_> {
    fn text(&self, col: &str) -> Result<Option<String>, StoreError> {
        self.get(col)
    }
    fn uuid(&self, col: &str) -> Result<Option<Uuid>, StoreError> {
        self.get::<Option<String>>(col)?
            .as_deref()
            .map(uuid)
            .transpose()
    }
    fn time(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.get::<Option<String>>(col)?
            .as_deref()
            .map(time)
            .transpose()
    }
    fn int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        self.get(col)
    }
    fn float(&self, col: &str) -> Result<f64, StoreError> {
        self.get(col)
    }
}

/// Every row of `stmt` run with `params`, as jobs.
fn jobs(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<Job>, StoreError> {
    let columns = columns(stmt);
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(super::super::rows::job(&Named {
            row,
            columns: &columns,
        })?);
    }
    Ok(out)
}

fn apply(conn: &Connection, op: &Op) -> Result<Done, StoreError> {
    Ok(match op {
        Op::Claim(job, stale) => Done::Claim(claim(conn, job, *stale)?),
        Op::MarkUnknown(before) => Done::Count(mark_unknown(conn, None, Some(*before))?),
        Op::Finish(job, attempt, outcome) => {
            finish_attempt(conn, *job, *attempt, outcome)?;
            Done::Nothing
        }
        Op::Status(job, update, at) => {
            record_status(conn, *job, update, *at)?;
            Done::Nothing
        }
        Op::ClaimDue(worker, at, ttl, limit) => {
            Done::Jobs(claim_due(conn, worker, *at, *ttl, *limit)?)
        }
        Op::Release(job, worker) => {
            conn.prepare_cached(
                "UPDATE jobs SET claimed_by = NULL, claim_until = NULL WHERE id = ?1 AND claimed_by = ?2",
            )?
            .execute(params![job.to_string(), worker])?;
            Done::Nothing
        }
        Op::ReleaseAll(worker) => {
            conn.prepare_cached(
                "UPDATE jobs SET claimed_by = NULL, claim_until = NULL WHERE claimed_by = ?1",
            )?
            .execute(params![worker])?;
            Done::Nothing
        }
        Op::UseJti(source, jti, expires_at) => {
            conn.prepare_cached("DELETE FROM assertion_jtis WHERE expires_at < ?1")?
                .execute(params![ts(Utc::now())])?;
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO assertion_jtis (source_key, jti, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (source_key, jti) DO NOTHING",
                )?
                .execute(params![source, jti, ts(*expires_at)])?;
            Done::Fresh(inserted == 1)
        }
        Op::Secret(name, fresh) => {
            conn.prepare_cached(
                "INSERT INTO gateway_keys (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            )?
            .execute(params![name, fresh])?;
            let value: String = conn
                .prepare_cached("SELECT value FROM gateway_keys WHERE name = ?1")?
                .query_row(params![name], |r| r.get(0))?;
            Done::Text(value)
        }
        Op::AppendLog(records) => {
            append_log(conn, records)?;
            Done::Nothing
        }
        Op::PruneLogs(before, limit) => {
            let gone = conn
                .prepare_cached(
                    "DELETE FROM message_log WHERE seq IN
                        (SELECT seq FROM message_log WHERE at < ?1 ORDER BY at LIMIT ?2)",
                )?
                .execute(params![ts(*before), i64::from(*limit)])?;
            Done::Count(gone as u64)
        }
        Op::PruneJobs(before, limit) => {
            let ids: Vec<String> = conn
                .prepare_cached(prunable_jobs())?
                .query_map(params![ts(*before), i64::from(*limit)], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut attempts = conn.prepare_cached("DELETE FROM job_attempts WHERE job_id = ?1")?;
            let mut jobs = conn.prepare_cached("DELETE FROM jobs WHERE id = ?1")?;
            for id in &ids {
                attempts.execute(params![id])?;
                jobs.execute(params![id])?;
            }
            Done::Count(ids.len() as u64)
        }
        Op::Notify(job, update) => {
            let (state, next) = match update {
                NotifyUpdate::Sent => ("sent", None),
                NotifyUpdate::RetryAt(t) => ("pending", Some(ts(*t))),
                NotifyUpdate::GaveUp => ("failed", None),
            };
            conn.prepare_cached(
                "UPDATE jobs SET notify_state = ?1, notify_next_at = ?2, notify_attempts = notify_attempts + 1
                 WHERE id = ?3",
            )?
            .execute(params![state, next, job.to_string()])?;
            Done::Nothing
        }
    })
}

/// The finished jobs a prune deletes (see `store::prunable_jobs_sql`), in `jobs_created`'s order.
fn prunable_jobs() -> &'static str {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        crate::store::prunable_jobs_sql("jobs INDEXED BY jobs_created", "?1", "?2")
    });
    &SQL
}

fn claim(conn: &Connection, job: &NewJob, stale_after: Duration) -> Result<Claim, StoreError> {
    // Twice at most: a request whose job ended retires that row and is then inserted afresh.
    for _ in 0..2 {
        let now = ts(Utc::now());
        let inserted = conn
            .prepare_cached(
                "INSERT INTO jobs (id, source_key, log_id, attempt_id, attempts, destination, environment, event_type,
                                   group_id, fingerprint, state, created_at, updated_at, request)
                 VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?10, ?11)
                 ON CONFLICT (source_key, log_id, fingerprint) DO NOTHING",
            )?
            .execute(params![
                job.id.to_string(),
                job.source_key,
                job.log_id.to_string(),
                job.attempt_id.to_string(),
                job.destination,
                job.environment,
                job.event_type,
                job.group_id,
                job.fingerprint,
                now,
                job.request,
            ])?;
        if inserted == 1 {
            return Ok(Claim::New);
        }
        let found = jobs(
            &mut *conn.prepare_cached(
                "SELECT * FROM jobs WHERE source_key = ?1 AND log_id = ?2 AND fingerprint = ?3",
            )?,
            params![job.source_key, job.log_id.to_string(), job.fingerprint],
        )?;
        let Some(existing) = found.into_iter().next() else {
            return Ok(Claim::InFlight);
        };
        // The writer is the only writer, but each update checks the state it read, as PostgreSQL's do.
        match super::super::decide(&existing, stale_after, job.retry_unknown) {
            Decision::Settled(claim) => return Ok(claim),
            Decision::MarkUnknown => {
                mark_unknown(conn, Some(existing.id), None)?;
                let mut job = existing;
                job.state = JobState::KickoffUnknown;
                return Ok(Claim::Unknown(Box::new(job)));
            }
            Decision::StartNewJob => {
                conn.prepare_cached(
                    "UPDATE jobs SET fingerprint = fingerprint || '#ended-' || id, updated_at = ?1
                     WHERE id = ?2 AND state = ?3",
                )?
                .execute(params![
                    now,
                    existing.id.to_string(),
                    existing.state.as_str()
                ])?;
            }
            Decision::RetrySameJob => {
                let updated = conn
                    .prepare_cached(
                        "UPDATE jobs SET state = 'pending', attempt_id = ?1, attempts = attempts + 1, updated_at = ?2,
                                         error_code = NULL, progress = NULL, manifest = NULL, expires = NULL,
                                         failure = NULL, notify_state = NULL, poll_failures = 0
                         WHERE id = ?3 AND state = ?4 AND attempt_id = ?5",
                    )?
                    .execute(params![
                        job.attempt_id.to_string(),
                        now,
                        existing.id.to_string(),
                        existing.state.as_str(),
                        existing.attempt_id.to_string(),
                    ])?;
                return Ok(if updated == 1 {
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
fn mark_unknown(
    conn: &Connection,
    job_id: Option<Uuid>,
    before: Option<DateTime<Utc>>,
) -> Result<u64, StoreError> {
    let now = ts(Utc::now());
    let marked: Vec<(String, String)> = conn
        .prepare_cached(
            "UPDATE jobs SET state = 'kickoff-unknown', error_code = 'kickoff-unknown', updated_at = ?1
             WHERE state = 'pending' AND (?2 IS NULL OR id = ?2) AND (?3 IS NULL OR updated_at < ?3)
             RETURNING id, attempt_id",
        )?
        .query_map(
            params![now, job_id.map(|id| id.to_string()), before.map(ts)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<Result<_, _>>()?;
    let mut record = conn.prepare_cached(
        "INSERT INTO job_attempts (job_id, attempt_id, started_at, finished_at, outcome, upstream_status, error_code)
         VALUES (?1, ?2, ?3, ?3, 'unknown', NULL, 'kickoff-unknown')
         ON CONFLICT (job_id, attempt_id) DO NOTHING",
    )?;
    for (id, attempt) in &marked {
        record.execute(params![id, attempt, now])?;
    }
    Ok(marked.len() as u64)
}

fn finish_attempt(
    conn: &Connection,
    job_id: Uuid,
    attempt_id: Uuid,
    outcome: &AttemptOutcome,
) -> Result<(), StoreError> {
    let now = ts(Utc::now());
    let (state, url, error, upstream_status) = super::super::attempt_columns(outcome);
    let (job, attempt) = (job_id.to_string(), attempt_id.to_string());
    conn.prepare_cached(
        "UPDATE jobs SET state = ?1, upstream_status_url = COALESCE(?2, upstream_status_url), error_code = ?3,
                         updated_at = ?4, next_poll_at = CASE WHEN ?1 = 'accepted' THEN ?4 ELSE NULL END
         WHERE id = ?5 AND attempt_id = ?6",
    )?
    .execute(params![state, url, error, now, job, attempt])?;
    conn.prepare_cached(
        "INSERT INTO job_attempts (job_id, attempt_id, started_at, finished_at, outcome, upstream_status, error_code)
         VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6)
         ON CONFLICT (job_id, attempt_id) DO UPDATE SET finished_at = ?3, outcome = ?4,
             upstream_status = ?5, error_code = ?6",
    )?
    .execute(params![
        job,
        attempt,
        now,
        state,
        upstream_status.map(i64::from),
        error
    ])?;
    Ok(())
}

fn record_status(
    conn: &Connection,
    job_id: Uuid,
    update: &StatusUpdate,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let c = StatusColumns::from_update(update, at);
    conn.prepare_cached(
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
    )?
    .execute(params![
        c.state,
        c.progress,
        c.retry_after_secs,
        c.next_poll_at.map(ts),
        ts(at),
        matches!(c.failures, FailureCount::Increment),
        c.manifest,
        c.expires,
        c.error_code,
        c.notify,
        job_id.to_string(),
        c.failure,
    ])?;
    Ok(())
}

/// The poller's claim. The jobs due a poll and those due a notification are each read in their
/// index's order and only as far as the limit, then the two short lists merged: one `WHERE … OR …` ordered by
/// `COALESCE(next_poll_at, notify_next_at)` read and sorted every due job for each claim, so a
/// claim took time in proportion to the backlog, on the writer every kick-off commits through
/// (150,000 due jobs: 83 ms a claim; this way 0.16 ms).
const CLAIM_DUE: &str = "UPDATE jobs SET claimed_by = ?1, claim_until = ?2
     WHERE id IN (
        SELECT id FROM (
            SELECT id, due FROM (
                SELECT id, next_poll_at AS due FROM jobs
                WHERE state = 'accepted' AND next_poll_at <= ?3
                  AND (claim_until IS NULL OR claim_until < ?3)
                ORDER BY next_poll_at LIMIT ?4)
            UNION ALL
            SELECT id, due FROM (
                SELECT id, notify_next_at AS due FROM jobs
                WHERE notify_state = 'pending' AND notify_next_at <= ?3
                  AND (claim_until IS NULL OR claim_until < ?3)
                ORDER BY notify_next_at LIMIT ?4))
        ORDER BY due LIMIT ?4)
     RETURNING *";

fn claim_due(
    conn: &Connection,
    worker: &str,
    at: DateTime<Utc>,
    ttl: Duration,
    limit: u32,
) -> Result<Vec<Job>, StoreError> {
    let until = at + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    // One writer: this single statement is the whole claim (PostgreSQL needs SKIP LOCKED instead).
    let mut claim = conn.prepare_cached(CLAIM_DUE)?;
    jobs(
        &mut claim,
        params![worker, ts(until), ts(at), i64::from(limit)],
    )
}

/// Most idle read connections kept for point reads.
const MAX_IDLE_READERS: usize = 8;

/// Read-only connections for point reads on the caller's thread: one is taken for a read and put
/// back after, so each thread reading at a time has its own.
#[derive(Debug)]
pub(super) struct PointReaders {
    path: std::path::PathBuf,
    idle: std::sync::Mutex<Vec<Connection>>,
}

impl PointReaders {
    pub(super) fn new(path: std::path::PathBuf) -> PointReaders {
        PointReaders {
            path,
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(8);
        Ok(conn)
    }

    /// Closes the idle connections (the store is closing).
    pub(super) fn close(&self) {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    fn take(&self) -> Result<Connection, StoreError> {
        let taken = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        match taken {
            Some(c) => Ok(c),
            None => self.open(),
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }

    /// How many message log records match `filter`, up to `cap`: counted on a blocking thread,
    /// stopped inside SQLite when `budget` runs out (`None`) or as soon as the caller stops waiting,
    /// so a count over millions of records never goes on holding a connection and a core.
    pub(super) async fn count_logs(
        &self,
        filter: &super::super::LogFilter,
        cap: u64,
        budget: Duration,
    ) -> Result<Option<u64>, StoreError> {
        use super::super::filters::{FilterValue, Part, log_filter_parts};
        use rusqlite::types::Value;
        let mut sql = String::from("SELECT COUNT(*) FROM (SELECT 1 FROM message_log");
        let mut values: Vec<Value> = Vec::new();
        for part in log_filter_parts(filter) {
            match part {
                Part::Sql(s) => sql.push_str(s),
                Part::Value(v) => {
                    sql.push('?');
                    values.push(match v {
                        FilterValue::Text(t) => Value::Text(t),
                        FilterValue::Int(i) => Value::Integer(i),
                        FilterValue::Uuid(u) => Value::Text(u.to_string()),
                        FilterValue::Time(t) => Value::Text(ts(t)),
                    });
                }
            }
        }
        sql.push_str(" LIMIT ?) AS capped");
        values.push(Value::Integer(i64::try_from(cap).unwrap_or(i64::MAX)));
        let conn = self.take()?;
        /// Interrupts the count if the caller stops waiting for it.
        struct Interrupt(Option<rusqlite::InterruptHandle>);
        impl Drop for Interrupt {
            fn drop(&mut self) {
                if let Some(handle) = self.0.take() {
                    handle.interrupt();
                }
            }
        }
        let mut interrupt = Interrupt(Some(conn.get_interrupt_handle()));
        let counted = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + budget;
            conn.progress_handler(10_000, Some(move || std::time::Instant::now() > deadline));
            let n = conn.prepare_cached(&sql).and_then(|mut s| {
                s.query_row(rusqlite::params_from_iter(values), |r| r.get::<_, i64>(0))
            });
            conn.progress_handler(0, None::<fn() -> bool>);
            (conn, n)
        })
        .await;
        interrupt.0 = None;
        let (conn, n) =
            counted.map_err(|e| StoreError::Unavailable(format!("count task failed: {e}")))?;
        self.give_back(conn);
        match n {
            Ok(n) => Ok(Some(u64::try_from(n).unwrap_or(0))),
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The job `id`, as committed.
    pub(super) fn job(&self, id: Uuid) -> Result<Option<Job>, StoreError> {
        let conn = self.take()?;
        let found = conn
            .prepare_cached("SELECT * FROM jobs WHERE id = ?1")
            .map_err(StoreError::from)
            .and_then(|mut select| jobs(&mut select, params![id.to_string()]))
            .map(|found| found.into_iter().next());
        self.give_back(conn);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RecordKind;

    /// A write connection to a new database in `dir`, migrated as the store migrates it.
    fn migrated(dir: &tempfile::TempDir) -> Connection {
        let path = dir.path().join("jobs.db");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = crate::store::open(&format!("sqlite://{}", path.display()), 1)
                .await
                .unwrap();
            store.close().await;
        });
        connect(&path).unwrap()
    }

    /// Record `i` of a batch: every column different from its neighbours', some left empty.
    fn record(i: usize) -> LogRecord {
        let odd = !i.is_multiple_of(2);
        LogRecord {
            kind: if odd {
                RecordKind::Upstream
            } else {
                RecordKind::Request
            },
            log_id: Uuid::now_v7(),
            attempt_id: Uuid::now_v7(),
            time: Utc::now() + chrono::Duration::milliseconds(i as i64),
            source: odd.then(|| format!("source {i}")),
            destination: Some(format!("destination {i}")),
            environment: (!odd).then(|| "Production".to_owned()),
            event_type: Some(format!("event {i}")),
            method: Some(if odd { "GET" } else { "POST" }.to_owned()),
            route: format!("/route/{i}"),
            gateway_status: (!odd).then_some(200 + i as u16),
            upstream_status: odd.then_some(400 + i as u16),
            error_code: odd.then(|| format!("error-{i}")),
            duration_ms: i as f64 + 0.25,
            job_id: (!i.is_multiple_of(3)).then(Uuid::now_v7),
            upstream_request_id: i.is_multiple_of(5).then(|| format!("ehr-{i}")),
            seq: 0,
        }
    }

    /// Each record's columns as the table holds them, in `seq` order.
    fn stored(conn: &Connection) -> Vec<Vec<String>> {
        let mut stmt = conn
            .prepare(
                "SELECT kind, log_id, attempt_id, at, source, destination, environment, event_type,
                    method, route, gateway_status, upstream_status, error_code, duration_ms, job_id,
                    upstream_request_id FROM message_log ORDER BY seq",
            )
            .unwrap();
        stmt.query_map([], |r| {
            (0..16)
                .map(|i| {
                    r.get::<_, rusqlite::types::Value>(i)
                        .map(|v| format!("{v:?}"))
                })
                .collect()
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    #[test]
    fn the_writer_keeps_its_statement_journals_and_temporary_tables_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let conn = migrated(&dir);
        // 2 is MEMORY (0 the build's default, files; 1 FILE).
        let temp_store: i64 = conn
            .pragma_query_value(None, "temp_store", |r| r.get(0))
            .unwrap();
        assert_eq!(temp_store, 2);
    }

    #[test]
    fn pruning_finds_finished_jobs_by_creation_time_without_reading_and_sorting_every_finished_job()
    {
        let dir = tempfile::tempdir().unwrap();
        let conn = migrated(&dir);
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", prunable_jobs()))
            .unwrap()
            .query_map(params![ts(Utc::now()), 1_000], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX jobs_created")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
    }

    #[test]
    fn a_batch_of_any_size_is_written_whole_in_order_with_every_column() {
        let dir = tempfile::tempdir().unwrap();
        let conn = migrated(&dir);
        // Sizes around and across the multi-row statements' sizes (64, 16, 4, 1).
        let mut expected = Vec::new();
        for size in [1, 3, 4, 5, 15, 16, 17, 63, 64, 65, 85, 150] {
            let records: Vec<LogRecord> = (0..size).map(record).collect();
            append_log(&conn, &records).unwrap();
            for r in &records {
                let text = |v: Option<String>| match v {
                    Some(t) => format!("Text({t:?})"),
                    None => "Null".to_owned(),
                };
                let int = |v: Option<u16>| v.map_or("Null".to_owned(), |n| format!("Integer({n})"));
                expected.push(vec![
                    text(Some(r.kind.as_str().to_owned())),
                    text(Some(r.log_id.to_string())),
                    text(Some(r.attempt_id.to_string())),
                    text(Some(ts(r.time))),
                    text(r.source.clone()),
                    text(r.destination.clone()),
                    text(r.environment.clone()),
                    text(r.event_type.clone()),
                    text(r.method.clone()),
                    text(Some(r.route.clone())),
                    int(r.gateway_status),
                    int(r.upstream_status),
                    text(r.error_code.clone()),
                    format!("Real({:?})", r.duration_ms),
                    text(r.job_id.map(|j| j.to_string())),
                    text(r.upstream_request_id.clone()),
                ]);
            }
            assert_eq!(stored(&conn), expected, "after a batch of {size}");
        }
    }

    #[test]
    fn the_pollers_claim_reads_each_kind_of_due_job_in_its_index_order_not_all_of_them() {
        let dir = tempfile::tempdir().unwrap();
        // The migrations, as the store applies them.
        let conn = migrated(&dir);
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {CLAIM_DUE}"))
            .unwrap()
            .query_map(params!["w", "2026", "2026", 64], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains("USING INDEX jobs_due (state=? AND next_poll_at<?)"),
            "{plan}"
        );
        assert!(
            plan.contains("USING INDEX jobs_notify (notify_next_at<?)"),
            "{plan}"
        );
        // Only jobs with a notification waiting are in it: a reservation adds nothing to it.
        let notify: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'jobs_notify'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            notify.ends_with("WHERE notify_state = 'pending'"),
            "{notify}"
        );
        assert!(!plan.contains("MULTI-INDEX OR"), "{plan}");
        // The one sort is the merge of the two short lists, after both index reads.
        assert_eq!(plan.matches("TEMP B-TREE").count(), 1, "{plan}");
        assert!(
            plan.trim_end().ends_with("USE TEMP B-TREE FOR ORDER BY"),
            "{plan}"
        );
    }
}
