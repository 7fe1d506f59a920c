//! The frame around every dashboard page, and the small pieces pages share (status badges, times,
//! paging links).

use actix_web::http::StatusCode;
use chrono::{DateTime, SecondsFormat, Utc};
use maud::{DOCTYPE, Markup, html};

/// The section a page belongs to, for the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Messages,
    Jobs,
    Destinations,
    None,
}

/// A whole page: `title`, the navigation (with the sign-out form when `csrf` is given) and `body`.
pub fn page(title: &str, section: Section, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · fhirgate" }
                link rel="stylesheet" href="/admin/ui/assets/app.css";
            }
            body {
                header.top {
                    a.brand href="/admin/ui/messages" { "fhirgate" }
                    @if let Some(csrf) = csrf {
                        nav {
                            a.current[section == Section::Messages] href="/admin/ui/messages" { "Messages" }
                            a.current[section == Section::Jobs] href="/admin/ui/jobs" { "Jobs" }
                            a.current[section == Section::Destinations] href="/admin/ui/destinations" { "Destinations" }
                        }
                        form.signout method="post" action="/admin/ui/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page that says what went wrong.
pub fn error_page(status: StatusCode, why: &str) -> Markup {
    page(
        status.canonical_reason().unwrap_or("Error"),
        Section::None,
        None,
        html! {
            p.notice.bad { (why) }
            p { a href="/admin/ui/messages" { "Back to the message log" } }
        },
    )
}

/// A time as operators read it: UTC, to the millisecond.
pub fn time(t: &DateTime<Utc>) -> Markup {
    html! {
        time datetime=(t.to_rfc3339_opts(SecondsFormat::Millis, true)) {
            (t.format("%Y-%m-%d %H:%M:%S%.3f"))
        }
    }
}

/// An optional time, or a dash.
pub fn maybe_time(t: Option<&DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => time(t),
        None => dash(),
    }
}

pub fn dash() -> Markup {
    html! { span.muted { "–" } }
}

/// An HTTP status, coloured by its class.
pub fn status(code: Option<u16>) -> Markup {
    match code {
        Some(code) => {
            let class = match code / 100 {
                2 => "status s2",
                3 => "status s3",
                4 if code == 429 => "status s429",
                4 => "status s4",
                _ => "status s5",
            };
            html! { span class=(class) { (code) } }
        }
        None => dash(),
    }
}

/// A job's state, coloured.
pub fn state(state: &str) -> Markup {
    let tone = match state {
        "completed" => "good",
        "accepted" | "pending" => "busy",
        "failed" | "export-failed" | "kickoff-unknown" => "bad",
        _ => "quiet",
    };
    html! { span class={ "state " (tone) } { (state) } }
}

/// A duration in milliseconds, as read at a glance.
pub fn millis(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// Keyset paging for the message log: "Newest" back to the first page when this is a later one, and
/// "Older" to the page after `next` (a cursor), keeping the rest of `query`.
pub fn cursor_pager(path: &str, query: &str, paged: bool, next: Option<String>) -> Markup {
    let link = |cursor: Option<&str>| {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if name != "offset" && name != "cursor" {
                out.append_pair(&name, &value);
            }
        }
        if let Some(c) = cursor {
            out.append_pair("cursor", c);
        }
        let q = out.finish();
        if q.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{q}")
        }
    };
    html! {
        nav.pager {
            @if paged { a rel="first" href=(link(None)) { "← Newest" } }
            @if let Some(next) = &next { a rel="next" href=(link(Some(next))) { "Older →" } }
        }
    }
}

/// "Newer" and "older" links for a page at `offset` of `limit` rows, keeping the rest of `query`.
pub fn pager(path: &str, query: &str, limit: u32, offset: u64, more: bool) -> Markup {
    let link = |offset: u64| {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if name != "offset" {
                out.append_pair(&name, &value);
            }
        }
        if offset > 0 {
            out.append_pair("offset", &offset.to_string());
        }
        let q = out.finish();
        if q.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{q}")
        }
    };
    html! {
        nav.pager {
            @if offset > 0 {
                a rel="prev" href=(link(offset.saturating_sub(u64::from(limit)))) { "← Newer" }
            }
            @if more {
                a rel="next" href=(link(offset + u64::from(limit))) { "Older →" }
            }
        }
    }
}
