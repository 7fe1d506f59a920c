//! The admin API's filters as SQL, once for both backends. They differ only in how ids and times are
//! stored: SQLite keeps them as text (fixed-width RFC 3339 times, so text order is time order),
//! PostgreSQL as `uuid` and `timestamptz`.

use super::{JobFilter, LogFilter};
use chrono::{DateTime, Utc};
use sqlx::{Database, Encode, QueryBuilder, Type};
use uuid::Uuid;

/// How a backend binds ids and times.
pub(crate) trait FilterValues: Database {
    fn bind_uuid(qb: &mut QueryBuilder<'_, Self>, v: Uuid);
    fn bind_time(qb: &mut QueryBuilder<'_, Self>, v: DateTime<Utc>);
}

impl FilterValues for sqlx::Sqlite {
    fn bind_uuid(qb: &mut QueryBuilder<'_, Self>, v: Uuid) {
        qb.push_bind(v.to_string());
    }
    fn bind_time(qb: &mut QueryBuilder<'_, Self>, v: DateTime<Utc>) {
        qb.push_bind(super::sqlite::ts(v));
    }
}

impl FilterValues for sqlx::Postgres {
    fn bind_uuid(qb: &mut QueryBuilder<'_, Self>, v: Uuid) {
        qb.push_bind(v);
    }
    fn bind_time(qb: &mut QueryBuilder<'_, Self>, v: DateTime<Utc>) {
        qb.push_bind(v);
    }
}

fn push_text<'a, DB>(qb: &mut QueryBuilder<'a, DB>, columns: &[(&str, &Option<String>)])
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
{
    for (column, value) in columns {
        if let Some(v) = value {
            qb.push(format!(" AND {column} = ")).push_bind(v.clone());
        }
    }
}

/// `WHERE …` for the message log.
pub(crate) fn push_log_filter<'a, DB>(qb: &mut QueryBuilder<'a, DB>, f: &LogFilter)
where
    DB: FilterValues,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    qb.push(" WHERE 1 = 1");
    if let Some(kind) = f.kind {
        qb.push(" AND kind = ").push_bind(kind.as_str().to_owned());
    }
    push_text(
        qb,
        &[
            ("source", &f.source),
            ("destination", &f.destination),
            ("environment", &f.environment),
            ("event_type", &f.event_type),
        ],
    );
    if let Some(class) = f.status_class {
        qb.push(" AND gateway_status >= ")
            .push_bind(i64::from(class) * 100)
            .push(" AND gateway_status < ")
            .push_bind((i64::from(class) + 1) * 100);
    }
    if let Some(status) = f.status {
        qb.push(" AND gateway_status = ")
            .push_bind(i64::from(status));
    }
    if let Some(since) = f.since {
        qb.push(" AND at >= ");
        DB::bind_time(qb, since);
    }
    if let Some(until) = f.until {
        qb.push(" AND at <= ");
        DB::bind_time(qb, until);
    }
    if let Some(log_id) = f.log_id {
        qb.push(" AND log_id = ");
        DB::bind_uuid(qb, log_id);
    }
    if let Some(job_id) = f.job_id {
        qb.push(" AND job_id = ");
        DB::bind_uuid(qb, job_id);
    }
}

/// `WHERE …` for jobs.
pub(crate) fn push_job_filter<'a, DB>(qb: &mut QueryBuilder<'a, DB>, f: &JobFilter)
where
    DB: FilterValues,
    String: Encode<'a, DB> + Type<DB>,
{
    qb.push(" WHERE 1 = 1");
    if let Some(state) = f.state {
        qb.push(" AND state = ")
            .push_bind(state.as_str().to_owned());
    }
    push_text(
        qb,
        &[
            ("source_key", &f.source),
            ("destination", &f.destination),
            ("environment", &f.environment),
        ],
    );
    if let Some(log_id) = f.log_id {
        qb.push(" AND log_id = ");
        DB::bind_uuid(qb, log_id);
    }
}

/// ` ORDER BY … LIMIT … OFFSET …`, newest first.
pub(crate) fn push_page<'a, DB>(qb: &mut QueryBuilder<'a, DB>, order: &str, limit: u32, offset: u64)
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
{
    qb.push(format!(" ORDER BY {order} LIMIT "))
        .push_bind(i64::from(limit))
        .push(" OFFSET ")
        .push_bind(i64::try_from(offset).unwrap_or(i64::MAX));
}
