//! The admin API's query strings: each parameter at most once, unknown names refused (a mistyped
//! filter never silently returns everything), values parsed or a 400 naming the parameter; paging links.

use crate::domain::{Issue, IssueCode};
use crate::error::GatewayError;
use actix_web::HttpRequest;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Page size when none is asked for, and the largest allowed.
const DEFAULT_LIMIT: u32 = 50;
pub(super) const MAX_LIMIT: u32 = 500;

/// Query parameters, each name at most once; unknown names are refused so a mistyped filter never
/// silently returns everything.
pub(super) struct Params {
    pairs: Vec<(String, String)>,
    issues: Vec<Issue>,
}

impl Params {
    pub(super) fn parse(req: &HttpRequest, known: &[&[&str]]) -> Params {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut issues = Vec::new();
        for (name, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
            let Some(canonical) = known.iter().find(|names| names.contains(&name.as_ref())) else {
                issues.push(Issue::at(
                    IssueCode::NotSupported,
                    crate::domain::shorten(&name),
                    "is not a filter of this route",
                ));
                continue;
            };
            let canonical = canonical[0].to_owned();
            // Checked here, at the boundary: a NUL or other control character cannot be stored or
            // searched for (PostgreSQL refuses NUL in text), so it is the caller's 400, not a 503.
            if value.chars().any(char::is_control) {
                issues.push(Issue::at(
                    IssueCode::Value,
                    canonical,
                    "may not contain control characters",
                ));
                continue;
            }
            if pairs.iter().any(|(n, _)| *n == canonical) {
                issues.push(Issue::at(IssueCode::Value, canonical, "may be given once"));
                continue;
            }
            pairs.push((canonical, value.into_owned()));
        }
        Params { pairs, issues }
    }

    pub(super) fn text(&self, name: &str) -> Option<String> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    }

    pub(super) fn parsed<T>(
        &mut self,
        name: &str,
        what: &str,
        f: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        let raw = self.text(name)?;
        let v = f(&raw);
        if v.is_none() {
            self.issues
                .push(Issue::at(IssueCode::Value, name, format!("must be {what}")));
        }
        v
    }

    pub(super) fn time(&mut self, name: &str) -> Option<DateTime<Utc>> {
        self.parsed(
            name,
            "an RFC 3339 date-time such as 2026-11-23T10:00:00Z",
            |s| {
                DateTime::parse_from_rfc3339(s)
                    .map(|d| d.with_timezone(&Utc))
                    .ok()
                    // A browser's `datetime-local` (no zone) is read as UTC.
                    .or_else(|| {
                        ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
                            .iter()
                            .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
                            .map(|n| n.and_utc())
                    })
            },
        )
    }

    pub(super) fn uuid(&mut self, name: &str) -> Option<Uuid> {
        self.parsed(name, "a UUID", |s| Uuid::parse_str(s).ok())
    }

    pub(super) fn page(&mut self) -> (u32, u64) {
        let limit = self
            .parsed("limit", "a whole number from 1 to 500", |s| {
                s.parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
            })
            .unwrap_or(DEFAULT_LIMIT);
        let offset = self
            .parsed("offset", "a whole number, 0 or more", |s| {
                s.parse::<u64>().ok()
            })
            .unwrap_or(0);
        (limit, offset)
    }

    pub(super) fn finish(self) -> Result<(), GatewayError> {
        if self.issues.is_empty() {
            Ok(())
        } else {
            Err(GatewayError::Invalid(self.issues))
        }
    }
}

/// A UUID from the path, or a 400 naming the parameter.
pub(super) fn path_uuid(raw: &str, name: &str) -> Result<Uuid, GatewayError> {
    Uuid::parse_str(raw).map_err(|_| {
        GatewayError::Invalid(vec![Issue::at(IssueCode::Value, name, "must be a UUID")])
    })
}

/// The link to the page after `cursor`: the same query without `offset`, with `cursor`.
pub(crate) fn cursor_link(req: &HttpRequest, cursor: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        if name != "offset" && name != "cursor" {
            query.append_pair(&name, &value);
        }
    }
    query.append_pair("cursor", cursor);
    format!("{}?{}", req.path(), query.finish())
}

/// The link to the next page, when there is one: the same query with `offset` moved on.
pub(super) fn next_link(req: &HttpRequest, limit: u32, offset: u64, more: bool) -> Option<String> {
    more.then(|| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
            if name != "offset" {
                query.append_pair(&name, &value);
            }
        }
        query.append_pair("offset", &(offset + u64::from(limit)).to_string());
        format!("{}?{}", req.path(), query.finish())
    })
}
