//! The Redox `Meta` object: read from a request, written on every envelope the gateway sends.

use super::reader::Reader;
use crate::domain::{ExportKind, Issue, IssueCode};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The only `Meta.DataModel` this gateway speaks.
pub const DATA_MODEL: &str = "FHIR Bulk Data Access";

/// A system named in `Meta.Source` or `Meta.Destinations[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Party {
    #[serde(rename = "ID")]
    pub id: Option<Uuid>,
    #[serde(rename = "Name")]
    pub name: Option<String>,
}

/// One entry of `Meta.Logs[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LogRef {
    #[serde(rename = "ID")]
    pub id: Option<Uuid>,
    #[serde(rename = "AttemptID")]
    pub attempt_id: Option<Uuid>,
}

/// A validated request `Meta`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub event_date_time: Option<DateTime<Utc>>,
    pub test: Option<bool>,
    pub source: Option<Party>,
    pub destinations: Vec<Party>,
    pub logs: Vec<LogRef>,
    pub facility_code: Option<String>,
}

impl Meta {
    /// The request's Log ID, when it carried one.
    pub fn log_id(&self) -> Option<Uuid> {
        self.logs.iter().find_map(|l| l.id)
    }

    pub fn source_id(&self) -> Option<Uuid> {
        self.source.as_ref().and_then(|s| s.id)
    }
}

const META_FIELDS: &[&str] = &[
    "DataModel",
    "EventType",
    "EventDateTime",
    "Test",
    "Source",
    "Destinations",
    "Logs",
    "FacilityCode",
];

fn read_uuid(r: &mut Reader<'_, '_>, key: &str) -> Option<Uuid> {
    r.parse_with(key, |s| {
        // Only the canonical hyphenated form: Redox's own ids look like this.
        if s.len() == 36
            && let Ok(u) = Uuid::parse_str(s)
        {
            return Ok(u);
        }
        Err(crate::domain::ParseError::value(
            "must be a UUID such as 7ce6f387-c33c-417d-8682-81e83628cbd9",
        ))
    })
}

fn read_short_text(r: &mut Reader<'_, '_>, key: &str) -> Option<String> {
    const MAX: usize = 256;
    let s = r.opt_str(key)?;
    if s.chars().count() > MAX {
        let path = r.path(key);
        r.issue(Issue::at(
            IssueCode::TooLong,
            path,
            format!("is longer than {MAX} characters"),
        ));
        return None;
    }
    Some(s.to_owned())
}

fn read_party(obj: &Map<String, Value>, prefix: String, issues: &mut Vec<Issue>) -> Party {
    let mut r = Reader::new(obj, prefix, issues);
    r.reject_unknown(&["ID", "Name"], "this object");
    Party {
        id: read_uuid(&mut r, "ID"),
        name: read_short_text(&mut r, "Name"),
    }
}

fn read_objects<'a>(r: &mut Reader<'a, '_>, key: &str) -> Vec<(String, &'a Map<String, Value>)> {
    let Some(items) = r.opt_array(key) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{}[{i}]", r.path(key));
        match item {
            Value::Object(o) => out.push((path, o)),
            _ => r.issue(Issue::at(IssueCode::Structure, path, "must be an object")),
        }
    }
    out
}

/// Reads and checks `Meta` for a kick-off of `kind`; every problem goes into `issues`.
pub fn read_meta(envelope: &mut Reader<'_, '_>, kind: ExportKind) -> Meta {
    if !envelope.has("Meta") {
        envelope.issue(Issue::at(IssueCode::Required, "Meta", "is required"));
        return Meta::default();
    }
    let Some(obj) = envelope.opt_object("Meta") else {
        return Meta::default();
    };
    let issues = envelope.issues();
    let mut r = Reader::new(obj, "Meta", issues);
    r.reject_unknown(META_FIELDS, "Meta");

    if let Some(model) = r.req_str("DataModel")
        && model != DATA_MODEL
    {
        r.issue(Issue::at(
            IssueCode::Value,
            "Meta.DataModel",
            format!("must be '{DATA_MODEL}'"),
        ));
    }
    if let Some(event) = r.req_str("EventType")
        && event != kind.event_type()
    {
        r.issue(Issue::at(
            IssueCode::Value,
            "Meta.EventType",
            format!("must be '{}' on this route", kind.event_type()),
        ));
    }
    // Same shape as a FHIR instant: ISO 8601 with seconds and a zone, as Redox writes it.
    let event_date_time = r.parse_with("EventDateTime", |s: &str| {
        crate::domain::FhirInstant::try_from(s)
            .map(|i| i.at().with_timezone(&Utc))
            .map_err(|_| {
                crate::domain::ParseError::value(
                    "must be an ISO 8601 date and time with a zone, such as 2026-05-28T22:44:52.399Z",
                )
            })
    });
    let test = r.opt_bool("Test");
    let facility_code = read_short_text(&mut r, "FacilityCode");

    let source_obj = r.opt_object("Source");
    let destination_objs = read_objects(&mut r, "Destinations");
    let log_objs = read_objects(&mut r, "Logs");
    let issues = r.issues();

    let source = source_obj.map(|o| read_party(o, "Meta.Source".to_owned(), issues));
    let destinations = destination_objs
        .into_iter()
        .map(|(path, o)| read_party(o, path, issues))
        .collect();
    let logs = log_objs
        .into_iter()
        .map(|(path, o)| {
            let mut r = Reader::new(o, path, issues);
            r.reject_unknown(&["ID", "AttemptID"], "a Logs entry");
            LogRef {
                id: read_uuid(&mut r, "ID"),
                attempt_id: read_uuid(&mut r, "AttemptID"),
            }
        })
        .collect();

    Meta {
        event_date_time,
        test,
        source,
        destinations,
        logs,
        facility_code,
    }
}

/// The `Meta` the gateway writes on an envelope it sends.
#[derive(Debug, Clone, Serialize)]
pub struct OutboundMeta {
    #[serde(rename = "DataModel")]
    pub data_model: &'static str,
    #[serde(rename = "EventType")]
    pub event_type: &'static str,
    #[serde(rename = "EventDateTime")]
    pub event_date_time: String,
    #[serde(rename = "Test")]
    pub test: Option<bool>,
    #[serde(rename = "Source")]
    pub source: Party,
    #[serde(rename = "Destinations")]
    pub destinations: Vec<Party>,
    #[serde(rename = "Logs")]
    pub logs: Vec<LogRef>,
    #[serde(rename = "FacilityCode")]
    pub facility_code: Option<String>,
}

impl OutboundMeta {
    /// Copies the request's Meta for a reply of `event_type`, stamped now, with this attempt's ids.
    pub fn reply(request: &Meta, event_type: &'static str, log_id: Uuid, attempt_id: Uuid) -> Self {
        OutboundMeta {
            data_model: DATA_MODEL,
            event_type,
            event_date_time: now_millis(),
            test: request.test,
            source: request.source.clone().unwrap_or_default(),
            destinations: request.destinations.clone(),
            logs: vec![LogRef {
                id: Some(log_id),
                attempt_id: Some(attempt_id),
            }],
            facility_code: request.facility_code.clone(),
        }
    }
}

/// Now, as Redox writes times: UTC, milliseconds, `Z`.
pub fn now_millis() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}
