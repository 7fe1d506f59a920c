//! Reading rows into the store's types, once for both backends: each backend says how it reads a
//! column of each kind (SQLite keeps ids and times as text, PostgreSQL as UUID and TIMESTAMPTZ), and the
//! readers below say which columns make a job, a log record or an attempt.

use super::{AttemptRecord, Job, LogRecord, RecordKind, StoreError, parse_state};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// How one backend reads a column of each kind.
pub(crate) trait ReadRow {
    fn text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn uuid(&self, col: &str) -> Result<Option<Uuid>, StoreError>;
    fn time(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    fn int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    fn float(&self, col: &str) -> Result<f64, StoreError>;
}

fn present<T>(col: &str, v: Option<T>) -> Result<T, StoreError> {
    v.ok_or_else(|| StoreError::Corrupt(format!("{col} is NULL")))
}

/// An HTTP status column.
fn status<R: ReadRow>(r: &R, col: &str) -> Result<Option<u16>, StoreError> {
    Ok(r.int(col)?.and_then(|s| u16::try_from(s).ok()))
}

pub(crate) fn job<R: ReadRow>(r: &R) -> Result<Job, StoreError> {
    let text = |c: &str| r.text(c).and_then(|v| present(c, v));
    let int = |c: &str| r.int(c).and_then(|v| present(c, v));
    let uuid = |c: &str| r.uuid(c).and_then(|v| present(c, v));
    let time = |c: &str| r.time(c).and_then(|v| present(c, v));
    Ok(Job {
        id: uuid("id")?,
        source_key: text("source_key")?,
        log_id: uuid("log_id")?,
        attempt_id: uuid("attempt_id")?,
        attempts: int("attempts")?,
        destination: text("destination")?,
        environment: text("environment")?,
        event_type: text("event_type")?,
        group_id: r.text("group_id")?,
        fingerprint: text("fingerprint")?,
        state: parse_state(&text("state")?)?,
        upstream_status_url: r.text("upstream_status_url")?,
        error_code: r.text("error_code")?,
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        progress: r.text("progress")?,
        retry_after_secs: r.int("retry_after_secs")?,
        next_poll_at: r.time("next_poll_at")?,
        last_polled_at: r.time("last_polled_at")?,
        poll_failures: int("poll_failures")?,
        manifest: r.text("manifest")?,
        expires: r.text("expires")?,
        failure: r.text("failure")?,
        notify_state: r.text("notify_state")?,
        notify_attempts: int("notify_attempts")?,
        request: r.text("request")?,
    })
}

pub(crate) fn log_record<R: ReadRow>(r: &R) -> Result<LogRecord, StoreError> {
    let kind = present("kind", r.text("kind")?)?;
    Ok(LogRecord {
        kind: RecordKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("kind {kind}")))?,
        log_id: present("log_id", r.uuid("log_id")?)?,
        attempt_id: present("attempt_id", r.uuid("attempt_id")?)?,
        time: present("at", r.time("at")?)?,
        source: r.text("source")?,
        destination: r.text("destination")?,
        environment: r.text("environment")?,
        event_type: r.text("event_type")?,
        method: r.text("method")?,
        route: present("route", r.text("route")?)?,
        gateway_status: status(r, "gateway_status")?,
        upstream_status: status(r, "upstream_status")?,
        error_code: r.text("error_code")?,
        duration_ms: r.float("duration_ms")?,
        job_id: r.uuid("job_id")?,
        upstream_request_id: r.text("upstream_request_id")?,
        seq: r.int("seq")?.unwrap_or(0),
    })
}

pub(crate) fn attempt<R: ReadRow>(r: &R) -> Result<AttemptRecord, StoreError> {
    Ok(AttemptRecord {
        attempt_id: present("attempt_id", r.uuid("attempt_id")?)?,
        started_at: present("started_at", r.time("started_at")?)?,
        finished_at: r.time("finished_at")?,
        outcome: present("outcome", r.text("outcome")?)?,
        upstream_status: status(r, "upstream_status")?,
        error_code: r.text("error_code")?,
    })
}

/// `(job_id, upstream_status, source)` rows of `filters::last_upstream_statuses`.
pub(crate) fn last_status<R: ReadRow>(r: &R) -> Result<(Uuid, Option<u16>, i64), StoreError> {
    Ok((
        present("job_id", r.uuid("job_id")?)?,
        status(r, "upstream_status")?,
        present("source", r.int("source")?)?,
    ))
}
