//! `/healthz` (the process answers) and `/readyz` (config loaded and the job store reachable).

use crate::state::AppState;
use actix_web::{HttpResponse, web};
use serde_json::json;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready", "store": "ok"})),
        Err(e) => {
            tracing::warn!(message = "Not ready: the job store does not answer.", error = %e);
            HttpResponse::ServiceUnavailable()
                .json(json!({"status": "not-ready", "store": "unavailable"}))
        }
    }
}
