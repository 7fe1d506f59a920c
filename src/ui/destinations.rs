//! `/admin/ui/destinations`: each destination and environment's health at a glance, from the EHR
//! calls in the message log over the last 24 hours (the admin API's query, `kind=upstream`): calls,
//! failures, 429s, p50/p95 latency, and hourly charts drawn server-side as inline SVG; and what
//! capability discovery found.

use super::layout::{Section, millis, page, time};
use super::{Operator, UiError, html};
use crate::connectors::discovery::DiscoveryStatus;
use crate::state::AppState;
use crate::store::{LogFilter, LogRecord, RecordKind};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Duration, DurationRound, Utc};
use maud::{Markup, html};
use std::collections::BTreeMap;

/// Hours the page looks back.
const HOURS: usize = 24;
/// The most EHR calls read for the page (the latest ones); the page says when it saw only these.
const MAX_CALLS: u32 = 20_000;

/// One hour's (or the whole day's) EHR calls for a destination.
#[derive(Debug, Default, Clone)]
struct Tally {
    calls: u64,
    /// No answer, or a 5xx.
    failures: u64,
    throttled: u64,
    latencies: Vec<f64>,
}

impl Tally {
    fn add(&mut self, r: &LogRecord) {
        self.calls += 1;
        match r.upstream_status {
            None => self.failures += 1,
            Some(s) if s >= 500 => self.failures += 1,
            Some(429) => self.throttled += 1,
            Some(_) => {}
        }
        self.latencies.push(r.duration_ms);
    }

    /// The `q` quantile of latency (nearest rank), once sorted.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Some(sorted[rank - 1])
    }
}

/// A destination's day: the whole, and each hour, oldest first.
#[derive(Debug, Clone)]
struct Day {
    total: Tally,
    hours: Vec<Tally>,
}

impl Default for Day {
    fn default() -> Self {
        Day {
            total: Tally::default(),
            hours: vec![Tally::default(); HOURS],
        }
    }
}

/// The calls of the last 24 hours by destination and environment. `start` is the first hour's start.
fn tally(calls: &[LogRecord], start: DateTime<Utc>) -> BTreeMap<(String, String), Day> {
    let mut days: BTreeMap<(String, String), Day> = BTreeMap::new();
    for r in calls {
        let key = (
            r.destination.clone().unwrap_or_default(),
            r.environment.clone().unwrap_or_default(),
        );
        let day = days.entry(key).or_default();
        day.total.add(r);
        let hour = (r.time - start).num_hours();
        if let Some(h) = usize::try_from(hour)
            .ok()
            .and_then(|h| day.hours.get_mut(h))
        {
            h.add(r);
        }
    }
    days
}

const CHART_W: f64 = 480.0;
const CHART_H: f64 = 64.0;

/// Hourly calls as bars, failures and 429s stacked on top in their colours.
fn calls_chart(day: &Day) -> Markup {
    let peak = day.hours.iter().map(|h| h.calls).max().unwrap_or(0).max(1) as f64;
    let slot = CHART_W / HOURS as f64;
    let bar = |i: usize, from: f64, n: u64, class: &'static str, label: String| {
        let h = n as f64 / peak * (CHART_H - 4.0);
        html! {
            rect class=(class) x=(format!("{:.1}", i as f64 * slot + 1.0)) y=(format!("{:.1}", CHART_H - from - h))
                width=(format!("{:.1}", slot - 2.0)) height=(format!("{:.1}", h)) {
                title { (label) }
            }
        }
    };
    html! {
        svg.chart role="img" viewBox=(format!("0 0 {CHART_W} {CHART_H}")) width=(CHART_W) height=(CHART_H) {
            title { "EHR calls per hour, last 24 hours (failures red, 429s amber)" }
            @for (i, h) in day.hours.iter().enumerate() {
                @let ok = h.calls - h.failures - h.throttled;
                @let ok_h = ok as f64 / peak * (CHART_H - 4.0);
                @let thr_h = h.throttled as f64 / peak * (CHART_H - 4.0);
                (bar(i, 0.0, ok, "ok", format!("{} calls, {} failed, {} throttled", h.calls, h.failures, h.throttled)))
                (bar(i, ok_h, h.throttled, "throttled", format!("{} answered 429", h.throttled)))
                (bar(i, ok_h + thr_h, h.failures, "failed", format!("{} failed", h.failures)))
            }
            line.axis x1="0" y1=(CHART_H - 0.5) x2=(CHART_W) y2=(CHART_H - 0.5) {}
        }
    }
}

/// Hourly p95 latency as a line, with dots where there were calls.
fn latency_chart(day: &Day) -> Markup {
    let p95: Vec<Option<f64>> = day.hours.iter().map(|h| h.quantile(0.95)).collect();
    let peak = p95.iter().flatten().fold(1.0_f64, |a, b| a.max(*b));
    let slot = CHART_W / HOURS as f64;
    let points: Vec<(f64, f64, f64)> = p95
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            v.map(|v| {
                (
                    i as f64 * slot + slot / 2.0,
                    CHART_H - 3.0 - v / peak * (CHART_H - 8.0),
                    v,
                )
            })
        })
        .collect();
    let path = points
        .iter()
        .map(|(x, y, _)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ");
    html! {
        svg.chart role="img" viewBox=(format!("0 0 {CHART_W} {CHART_H}")) width=(CHART_W) height=(CHART_H) {
            title { "p95 latency of EHR calls per hour, last 24 hours (peak " (millis(peak)) ")" }
            @if points.len() > 1 { polyline.latency points=(path) {} }
            @for (x, y, v) in &points {
                circle.latency cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="2" { title { "p95 " (millis(*v)) } }
            }
            line.axis x1="0" y1=(CHART_H - 0.5) x2=(CHART_W) y2=(CHART_H - 0.5) {}
        }
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

fn discovery(status: &DiscoveryStatus) -> Markup {
    let found = status.in_force();
    html! {
        @match status {
            DiscoveryStatus::Off => span.muted { "discovery off: the vendor profile's table" },
            DiscoveryStatus::Pending => span.muted { "discovery pending" },
            DiscoveryStatus::Found(d) => { "discovered " (time(&d.at)) },
            DiscoveryStatus::Failed { at, why, .. } => span.error { "discovery failed " (time(at)) ": " (why) },
        }
        @if let Some(d) = found {
            ul.caps {
                @if let Some(kinds) = &d.kinds {
                    li { "levels: " (kinds.iter().map(|k| k.event_type()).collect::<Vec<_>>().join(", ")) }
                }
                @if let Some(params) = &d.parameters {
                    li { "parameters: " (params.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")) }
                }
                @if let Some(types) = &d.resource_types {
                    li { (types.len()) " resource types" }
                }
            }
        }
    }
}

/// `GET /admin/ui/destinations`
pub async fn show(op: Operator, state: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let now = Utc::now();
    let start =
        now.duration_trunc(Duration::hours(1)).unwrap_or(now) - Duration::hours(HOURS as i64 - 1);
    let filter = LogFilter {
        kind: Some(RecordKind::Upstream),
        since: Some(start),
        ..LogFilter::default()
    };
    state.log.flush().await;
    let calls = state.store.query_logs(&filter, MAX_CALLS, 0).await?;
    let all_read = calls.len() < MAX_CALLS as usize;
    let days = tally(&calls, start);
    let empty = Day::default();
    // The busiest first, then by name.
    let mut connectors: Vec<_> = state
        .registry
        .all()
        .map(|c| {
            let key = (
                c.slug.as_str().to_owned(),
                c.environment.as_str().to_owned(),
            );
            let day = days.get(&key).unwrap_or(&empty);
            (c, day)
        })
        .collect();
    connectors.sort_by(|(a, da), (b, db)| {
        db.total
            .calls
            .cmp(&da.total.calls)
            .then_with(|| a.slug.as_str().cmp(b.slug.as_str()))
            .then_with(|| a.environment.as_str().cmp(b.environment.as_str()))
    });
    let body = html! {
        p.hint {
            "EHR calls (kick-offs, polls, files, deletes, tokens) since " (time(&start)) ", from the message log."
            @if !all_read { " Only the latest " (MAX_CALLS) " are counted." }
        }
        @for (c, day) in &connectors {
            section.destination {
                h2 { (c.name) " " span.muted { (c.slug.as_str()) " / " (c.environment.as_str()) " · " (c.vendor.as_str()) } }
                div.stats {
                    div { span.big { (day.total.calls) } " calls" }
                    div.failed[day.total.failures > 0] { span.big { (percent(day.total.failures, day.total.calls)) } " failed" }
                    div.throttled[day.total.throttled > 0] { span.big { (day.total.throttled) } " × 429" }
                    div { span.big { (day.total.quantile(0.5).map(millis).unwrap_or_else(|| "–".into())) } " p50" }
                    div { span.big { (day.total.quantile(0.95).map(millis).unwrap_or_else(|| "–".into())) } " p95" }
                }
                div.charts {
                    figure { (calls_chart(day)) figcaption { "calls per hour, 24 h ago → now (failed red, 429 amber)" } }
                    figure { (latency_chart(day)) figcaption { "p95 latency per hour, 24 h ago → now" } }
                }
                p.discovery { (discovery(&c.discovery_status())) }
            }
        }
    };
    Ok(html(
        StatusCode::OK,
        page("Destinations", Section::Destinations, Some(&op.csrf), body),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn call(at: DateTime<Utc>, status: Option<u16>, ms: f64) -> LogRecord {
        LogRecord {
            kind: RecordKind::Upstream,
            log_id: Uuid::nil(),
            attempt_id: Uuid::nil(),
            time: at,
            source: None,
            destination: Some("epic".into()),
            environment: Some("Production".into()),
            event_type: None,
            method: None,
            route: "status".into(),
            gateway_status: None,
            upstream_status: status,
            error_code: None,
            duration_ms: ms,
            job_id: None,
            upstream_request_id: None,
            seq: 0,
        }
    }

    #[test]
    fn calls_are_counted_by_hour_with_failures_and_throttling_apart() {
        let start = DateTime::parse_from_rfc3339("2026-11-30T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let calls = [
            call(start + Duration::minutes(5), Some(202), 10.0),
            call(start + Duration::minutes(50), Some(429), 20.0),
            call(start + Duration::hours(3), None, 30.0),
            call(start + Duration::hours(3), Some(503), 40.0),
        ];
        let days = tally(&calls, start);
        let day = &days[&("epic".to_owned(), "Production".to_owned())];
        assert_eq!(
            (day.total.calls, day.total.failures, day.total.throttled),
            (4, 2, 1)
        );
        assert_eq!(
            (day.hours[0].calls, day.hours[3].calls, day.hours[1].calls),
            (2, 2, 0)
        );
        assert_eq!(day.total.quantile(0.5), Some(20.0));
        assert_eq!(day.total.quantile(0.95), Some(40.0));
    }

    #[test]
    fn the_charts_draw_one_bar_group_per_hour() {
        let day = Day::default();
        let svg = calls_chart(&day).into_string();
        assert_eq!(svg.matches("<rect").count(), HOURS * 3);
        assert!(latency_chart(&day).into_string().contains("<svg"));
    }
}
