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

/// A value a filter compares with.
#[derive(Debug, Clone)]
pub(crate) enum FilterValue {
    Text(String),
    Int(i64),
    Uuid(Uuid),
    Time(DateTime<Utc>),
}

/// A piece of a `WHERE` clause: SQL, or a value bound in its place.
#[derive(Debug, Clone)]
pub(crate) enum Part {
    Sql(&'static str),
    Value(FilterValue),
}

/// `WHERE …` for the message log, as pieces: one definition for every backend and driver.
pub(crate) fn log_filter_parts(f: &LogFilter) -> Vec<Part> {
    use FilterValue as V;
    use Part::{Sql, Value};
    let mut p = vec![Sql(" WHERE 1 = 1")];
    if let Some(kind) = f.kind {
        p.extend([
            Sql(" AND kind = "),
            Value(V::Text(kind.as_str().to_owned())),
        ]);
    }
    for (column, value) in [
        (" AND source = ", &f.source),
        (" AND destination = ", &f.destination),
        (" AND environment = ", &f.environment),
        (" AND event_type = ", &f.event_type),
    ] {
        if let Some(v) = value {
            p.extend([Sql(column), Value(V::Text(v.clone()))]);
        }
    }
    if let Some(class) = f.status_class {
        p.extend([
            Sql(" AND gateway_status >= "),
            Value(V::Int(i64::from(class) * 100)),
            Sql(" AND gateway_status < "),
            Value(V::Int((i64::from(class) + 1) * 100)),
        ]);
    }
    if let Some(status) = f.status {
        p.extend([
            Sql(" AND gateway_status = "),
            Value(V::Int(i64::from(status))),
        ]);
    }
    if let Some(since) = f.since {
        p.extend([Sql(" AND at >= "), Value(V::Time(since))]);
    }
    if let Some(until) = f.until {
        p.extend([Sql(" AND at <= "), Value(V::Time(until))]);
    }
    if let Some(log_id) = f.log_id {
        p.extend([Sql(" AND log_id = "), Value(V::Uuid(log_id))]);
    }
    if let Some(job_id) = f.job_id {
        p.extend([Sql(" AND job_id = "), Value(V::Uuid(job_id))]);
    }
    if let Some(c) = f.before {
        p.extend([
            Sql(" AND (at < "),
            Value(V::Time(c.time)),
            Sql(" OR (at = "),
            Value(V::Time(c.time)),
            Sql(" AND seq < "),
            Value(V::Int(c.seq)),
            Sql("))"),
        ]);
    }
    p
}

/// `WHERE …` for the message log.
pub(crate) fn push_log_filter<'a, DB>(qb: &mut QueryBuilder<'a, DB>, f: &LogFilter)
where
    DB: FilterValues,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    for part in log_filter_parts(f) {
        match part {
            Part::Sql(sql) => {
                qb.push(sql);
            }
            Part::Value(FilterValue::Text(v)) => {
                qb.push_bind(v);
            }
            Part::Value(FilterValue::Int(v)) => {
                qb.push_bind(v);
            }
            Part::Value(FilterValue::Uuid(v)) => DB::bind_uuid(qb, v),
            Part::Value(FilterValue::Time(v)) => DB::bind_time(qb, v),
        }
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

/// `(job_id, upstream_status, source)` of each job's newest upstream call (`source` 0) and of its last
/// kick-off attempt that had a status (`source` 1): the admin job list's "last EHR status" for a whole
/// page in one query.
pub(crate) fn last_upstream_statuses<'a, DB>(job_ids: &[Uuid]) -> QueryBuilder<'a, DB>
where
    DB: FilterValues,
{
    let mut qb = QueryBuilder::new(
        "SELECT job_id, upstream_status, 0 AS source, seq AS ord FROM message_log WHERE seq IN \
         (SELECT MAX(seq) FROM message_log WHERE kind = 'upstream' AND job_id IN (",
    );
    push_ids(&mut qb, job_ids);
    qb.push(
        ") GROUP BY job_id) UNION ALL SELECT job_id, upstream_status, 1 AS source, 0 AS ord \
             FROM job_attempts a WHERE upstream_status IS NOT NULL AND started_at = \
             (SELECT MAX(started_at) FROM job_attempts b WHERE b.job_id = a.job_id \
              AND b.upstream_status IS NOT NULL) AND job_id IN (",
    );
    push_ids(&mut qb, job_ids);
    qb.push(")");
    qb
}

fn push_ids<DB: FilterValues>(qb: &mut QueryBuilder<'_, DB>, ids: &[Uuid]) {
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            qb.push(", ");
        }
        DB::bind_uuid(qb, *id);
    }
}

/// Folds the rows of [`last_upstream_statuses`]: the newest upstream call's status where it has one,
/// else the last kick-off attempt's.
pub(crate) fn fold_last_statuses(
    rows: impl IntoIterator<Item = (Uuid, Option<u16>, i64)>,
) -> std::collections::HashMap<Uuid, u16> {
    let mut from_calls = std::collections::HashMap::new();
    let mut from_attempts = std::collections::HashMap::new();
    for (job, status, source) in rows {
        if let Some(s) = status {
            if source == 0 {
                from_calls.insert(job, s);
            } else {
                from_attempts.insert(job, s);
            }
        }
    }
    for (job, s) in from_attempts {
        from_calls.entry(job).or_insert(s);
    }
    from_calls
}
