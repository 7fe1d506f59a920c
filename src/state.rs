//! What every handler shares: settings, the connector registry, the job store.

use crate::config::Settings;
use crate::connectors::registry::Registry;
use crate::domain::EnvironmentFlag;
use crate::store::Store;
use std::sync::Arc;
use uuid::Uuid;

/// Shared, read-only after boot.
#[derive(Debug, Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn Store>,
    /// Per-source request budgets (`[[sources]] rate_limit_per_minute`).
    pub limits: Arc<crate::auth::RateLimits>,
    /// The gateway's token endpoint for sources with registered keys.
    pub issuer: Arc<crate::auth::issuer::TokenIssuer>,
    /// Counters and histograms behind `/metrics`.
    pub metrics: Arc<crate::observe::metrics::Metrics>,
    /// The queue into the message log.
    pub log: crate::observe::msglog::MessageLog,
    /// The one outbound client policy (EHRs, files, token endpoints, JWKS, notifications).
    pub http: crate::connectors::http::UpstreamClient,
    /// Seals the EHR's attachment URLs into gateway links.
    pub links: Arc<crate::service::attachments::LinkSealer>,
    /// Signs the dashboard's sessions.
    pub sessions: Arc<crate::ui::session::SessionKeys>,
    /// Completed exports' manifest pages as sent (see `service::export::RenderedPages`).
    pub rendered: Arc<crate::service::export::RenderedPages>,
}

impl AppState {
    /// The partner-facing FHIR base for a destination: `{public_url}/fhir/R4/{slug}/{env}`.
    pub fn fhir_base(&self, slug: &str, env: EnvironmentFlag) -> String {
        format!(
            "{}/fhir/R4/{slug}/{env}",
            self.settings
                .server
                .public_url
                .as_str()
                .trim_end_matches('/')
        )
    }

    /// The gateway's own status URL for a job.
    pub fn status_url(&self, slug: &str, env: EnvironmentFlag, job_id: Uuid) -> String {
        format!("{}/export-status/{job_id}", self.fhir_base(slug, env))
    }
}
