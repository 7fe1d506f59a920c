//! `/healthz` (the process answers) and `/readyz` (config loaded and the job store reachable, with
//! where capability discovery stands per destination).

use crate::state::AppState;
use actix_web::{HttpResponse, web};
use serde_json::json;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /metrics`: Prometheus text format. Job counts and poller lag are read from the store now,
/// the store writer's commit counts from its counters.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.set_commits(state.store.commits());
    match state.store.job_stats().await {
        Ok(stats) => {
            let lag = stats.oldest_due.map_or(0.0, |due| {
                (chrono::Utc::now() - due).num_milliseconds() as f64 / 1000.0
            });
            state.metrics.set_job_stats(
                crate::store::JobState::ALL.map(crate::store::JobState::as_str),
                &stats.by_state,
                lag,
            );
        }
        Err(e) => {
            tracing::warn!(message = "Job gauges not refreshed: the job store does not answer.", error = %e)
        }
    }
    match state.metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    // A store that went away can take its pool's whole acquire timeout to say so; readiness
    // answers within two seconds either way.
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping())
        .await
        .unwrap_or_else(|_| {
            Err(crate::store::StoreError::Unavailable(
                "no answer within 2 s".into(),
            ))
        });
    let discovery = discovery_detail(&state);
    match ping {
        Ok(()) => HttpResponse::Ok()
            .json(json!({"status": "ready", "store": "ok", "discovery": discovery})),
        Err(e) => {
            tracing::warn!(message = "Not ready: the job store does not answer.", error = %e);
            HttpResponse::ServiceUnavailable().json(
                json!({"status": "not-ready", "store": "unavailable", "discovery": discovery}),
            )
        }
    }
}

/// Where capability discovery stands for each destination that has it on (it never makes the
/// gateway unready: the profile table stands until discovery succeeds).
fn discovery_detail(state: &AppState) -> serde_json::Value {
    let mut rows: Vec<_> = state
        .registry
        .all()
        .filter(|c| c.discovers())
        .map(|c| {
            let mut row = c.discovery_status().report();
            row["destination"] = json!(c.slug.as_str());
            row["environment"] = json!(c.environment.as_str());
            row
        })
        .collect();
    rows.sort_by_key(|r| (r["destination"].to_string(), r["environment"].to_string()));
    json!(rows)
}
