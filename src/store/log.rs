//! The message log's records, as stored: what a person searches when a partner asks "what happened to
//! message X?".

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Whether a record is a partner's request or the gateway's call to an EHR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    Request,
    Upstream,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Request => "request",
            RecordKind::Upstream => "upstream",
        }
    }

    pub fn parse(s: &str) -> Option<RecordKind> {
        match s {
            "request" => Some(RecordKind::Request),
            "upstream" => Some(RecordKind::Upstream),
            _ => None,
        }
    }
}

/// One message log record. For a request `route` is the route pattern and `method` its HTTP method;
/// for an upstream call `route` is the operation (kickoff, status, file, delete, token).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogRecord {
    pub kind: RecordKind,
    pub log_id: Uuid,
    pub attempt_id: Uuid,
    pub time: DateTime<Utc>,
    pub source: Option<String>,
    pub destination: Option<String>,
    pub environment: Option<String>,
    pub event_type: Option<String>,
    pub method: Option<String>,
    pub route: String,
    pub gateway_status: Option<u16>,
    pub upstream_status: Option<u16>,
    pub error_code: Option<String>,
    pub duration_ms: f64,
    pub job_id: Option<Uuid>,
    /// For an upstream call: the EHR's own id for it (Oracle Health's `opc-request-id`, or the header
    /// the vendor profile names), to quote to the vendor's support.
    pub upstream_request_id: Option<String>,
    /// Where the record sits in the store (0 until written): with `time`, the admin API's paging
    /// cursor. Not shown.
    #[serde(skip)]
    pub seq: i64,
}

/// What `GET /admin/logs` filters on; every field optional, all given must match.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub kind: Option<RecordKind>,
    pub source: Option<String>,
    pub destination: Option<String>,
    pub environment: Option<String>,
    pub event_type: Option<String>,
    /// 2 for 2xx … 5 for 5xx, on the gateway's status.
    pub status_class: Option<u16>,
    /// One exact gateway status.
    pub status: Option<u16>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub log_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    /// Keyset paging: only records after this one in the log's order (newest first).
    pub before: Option<LogCursor>,
}

/// A place in the message log (newest first): the last record of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCursor {
    pub time: DateTime<Utc>,
    pub seq: i64,
}

impl LogCursor {
    /// The cursor after `record`.
    pub fn after(record: &LogRecord) -> LogCursor {
        LogCursor {
            time: record.time,
            seq: record.seq,
        }
    }

    /// `2026-11-23T10:00:00.000000Z_12345`, as the `next` links carry it.
    pub fn encode(&self) -> String {
        format!(
            "{}_{}",
            self.time
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            self.seq
        )
    }

    pub fn parse(s: &str) -> Option<LogCursor> {
        let (time, seq) = s.rsplit_once('_')?;
        Some(LogCursor {
            time: DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc),
            seq: seq.parse().ok().filter(|n: &i64| *n >= 0)?,
        })
    }
}
