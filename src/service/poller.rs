//! The optional background poller (`[worker] enabled = true`): keeps in-progress jobs fresh without a
//! partner asking, and tells sources with a `notify_url` when their jobs complete or fail.
//!
//! Jobs are claimed for `claim_ttl_secs` (PostgreSQL: `FOR UPDATE SKIP LOCKED`), so several replicas can
//! run pollers; a crashed poller's claims run out and another picks the jobs up.

use crate::envelope::{LogRef, OutboundMeta, Party};
use crate::fhir::manifest;
use crate::service::backoff::{backoff_secs, jitter};
use crate::service::export::refresh;
use crate::state::AppState;
use crate::store::{Job, JobState, NotifyUpdate, StoreError};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// Where the poller reads the time; tests use a [`ManualClock`].
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The real time.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(at))
    }

    pub fn advance(&self, by: Duration) {
        let mut t = match self.0.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        *t += chrono::Duration::from_std(by).unwrap_or_default();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        match self.0.lock() {
            Ok(t) => *t,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }
}

/// The envelope POSTed to a source's `notify_url`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusCheckResponse {
    #[serde(rename = "Meta")]
    pub meta: OutboundMeta,
    /// 200 when the export completed; the error status a status request would answer otherwise.
    pub status: u16,
    #[serde(rename = "contentLocation")]
    pub content_location: String,
    /// The manifest's output files, with gateway URLs.
    pub output: Vec<Value>,
}

/// One poller; `id` names its claims.
#[derive(Debug, Clone)]
pub struct Poller {
    state: AppState,
    clock: Arc<dyn Clock>,
    id: String,
    http: reqwest::Client,
}

impl Poller {
    pub fn new(state: AppState, clock: Arc<dyn Clock>) -> Self {
        // Notifications follow the gateway's one outbound policy (timeouts, no redirects).
        let http = state.http.plain().clone();
        Poller {
            state,
            clock,
            id: format!("poller-{}", Uuid::new_v4()),
            http,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Claims due jobs, polls or notifies each, gives the claims back. Returns how many it handled.
    pub async fn tick(&self) -> Result<usize, StoreError> {
        let w = &self.state.settings.worker;
        let now = self.clock.now();
        let jobs = self
            .state
            .store
            .claim_due(
                &self.id,
                now,
                Duration::from_secs(w.claim_ttl_secs),
                w.batch,
            )
            .await?;
        // Up to `[worker] concurrency` jobs at once; each destination's own cap holds within that.
        let passes: Vec<_> = jobs
            .iter()
            .cloned()
            .map(|job| {
                let poller = self.clone();
                async move { poller.handle_recorded(&job, now).await }
            })
            .collect();
        let released: Vec<Result<(), StoreError>> = futures_util::stream::iter(passes)
            .buffer_unordered(w.concurrency.max(1) as usize)
            .collect()
            .await;
        released.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(jobs.len())
    }

    /// Handles one claimed job like a request (its upstream calls go to the message log under the
    /// job's Log ID, its log lines carry the job's fields), then gives the claim back.
    async fn handle_recorded(&self, job: &Job, now: DateTime<Utc>) -> Result<(), StoreError> {
        super::on_behalf_of_job(&self.state, job, "background-poll", self.handle(job, now)).await;
        self.state.store.release(job.id, &self.id).await
    }

    async fn handle(&self, job: &Job, now: DateTime<Utc>) {
        if job.state == JobState::Accepted && job.next_poll_at.is_some_and(|t| t <= now) {
            match self.state.registry.get(&job.destination, &job.environment) {
                Some(connector) => {
                    let _slot = connector.poll_slot().await;
                    if let Err(e) = refresh(&self.state, &connector, job, now).await {
                        tracing::warn!(message = "Background poll failed.", log_id = %job.log_id, job_id = %job.id, code = e.code());
                    }
                }
                None => {
                    tracing::warn!(message = "Job of a destination no longer configured.", job_id = %job.id)
                }
            }
        }
        let fresh = match self.state.store.get(job.id).await {
            Ok(Some(j)) => j,
            _ => return,
        };
        if fresh.notify_state.as_deref() == Some("pending") {
            self.notify(&fresh, now).await;
        }
    }

    fn notification(&self, job: &Job) -> Option<(url::Url, StatusCheckResponse)> {
        let settings = &self.state.settings;
        let source = settings.source(&job.source_key)?;
        let url = source.notify_url.clone()?;
        let env = crate::domain::EnvironmentFlag::try_from(job.environment.as_str()).ok()?;
        let destination = settings
            .destinations
            .iter()
            .find(|d| d.slug.as_str() == job.destination)?;
        let request_meta = crate::envelope::Meta {
            source: Some(Party {
                id: Some(source.id),
                name: Some(source.name.clone()),
            }),
            destinations: vec![Party {
                id: destination.id,
                name: Some(destination.name.clone()),
            }],
            ..Default::default()
        };
        let mut meta = OutboundMeta::reply(
            &request_meta,
            "status-check-response",
            job.log_id,
            Uuid::new_v4(),
        );
        meta.logs = vec![LogRef {
            id: Some(job.log_id),
            attempt_id: meta.logs.first().and_then(|l| l.attempt_id),
        }];
        let content_location = self.state.status_url(&job.destination, env, job.id);
        let (status, output) = match job.state {
            JobState::Completed => {
                // Every file of every page: the notification is sent once the whole set is known.
                let connector = self
                    .state
                    .registry
                    .get(&job.destination, &job.environment)?;
                let pages = manifest::pages(job.manifest.as_deref().unwrap_or("[]")).ok()?;
                let output = (0..pages.len())
                    .flat_map(|k| {
                        let page =
                            super::export::partner_page(&self.state, &connector, job, &pages, k);
                        page["output"].as_array().cloned().unwrap_or_default()
                    })
                    .collect();
                (200, output)
            }
            _ => {
                let status = job
                    .error_code
                    .as_deref()
                    .and_then(|c| c.strip_prefix("upstream-"))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(502);
                (status, Vec::new())
            }
        };
        Some((
            url,
            StatusCheckResponse {
                meta,
                status,
                content_location,
                output,
            },
        ))
    }

    async fn notify(&self, job: &Job, now: DateTime<Utc>) {
        let w = &self.state.settings.worker;
        let update = match self.notification(job) {
            None => NotifyUpdate::GaveUp,
            Some((url, envelope)) => {
                let sent = self.http.post(url).json(&envelope).send().await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        tracing::info!(message = "Source notified.", log_id = %job.log_id, job_id = %job.id);
                        NotifyUpdate::Sent
                    }
                    other => {
                        let attempts = job.notify_attempts + 1;
                        tracing::warn!(message = "Notification failed.", log_id = %job.log_id, job_id = %job.id,
                            attempts, status = other.as_ref().map(|r| r.status().as_u16()).unwrap_or(0));
                        if attempts >= i64::from(w.notify_max_attempts) {
                            NotifyUpdate::GaveUp
                        } else {
                            let wait = jitter(backoff_secs(2, attempts - 1, w.max_backoff_secs));
                            NotifyUpdate::RetryAt(now + chrono::Duration::seconds(wait as i64))
                        }
                    }
                }
            }
        };
        if let Err(e) = self.state.store.record_notification(job.id, update).await {
            tracing::error!(message = "Could not record a notification.", job_id = %job.id, error = %e);
        }
    }

    /// Ticks every `tick_secs` until `shutdown` turns true, then gives back every claim it holds.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let tick = Duration::from_secs_f64(self.state.settings.worker.tick_secs);
        tracing::info!(message = "Background poller started.", poller = %self.id);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let full = match self.tick().await {
                Ok(handled) => handled >= self.state.settings.worker.batch as usize,
                Err(e) => {
                    tracing::warn!(message = "Poller tick failed.", error = %e);
                    false
                }
            };
            // A full batch means more are due: look again at once (after letting others run).
            if full {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(tick) => {}
            }
        }
        if let Err(e) = self.state.store.release_all(&self.id).await {
            tracing::warn!(message = "Could not release the poller's claims.", error = %e);
        }
        tracing::info!(message = "Background poller stopped.", poller = %self.id);
    }
}
