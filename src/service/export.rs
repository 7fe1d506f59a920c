//! After kick-off: status (answered from the store until the EHR may be asked again), file download
//! through the gateway, and delete. Partner requests and the background poller share `refresh`.

use super::backoff::backoff_secs;
use crate::auth::Caller;
use crate::connectors::files::{FileError, FileRequestHeaders};
use crate::connectors::http::{TransportError, retry_after_secs};
use crate::connectors::{Connector, UpstreamError};
use crate::domain::{Issue, IssueCode};
use crate::error::{Failure, GatewayError};
use crate::fhir::OperationOutcome;
use crate::fhir::manifest;
use crate::state::AppState;
use crate::store::{Job, JobState, StatusUpdate};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// What a status request answers.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusView {
    /// 202: still running; with the partial manifest page when the EHR sent one (Bulk Data v3).
    InProgress {
        progress: Option<String>,
        retry_after: u64,
        manifest: Option<Value>,
    },
    /// 200: the manifest page, every URL the gateway's, as sent.
    Complete {
        manifest: bytes::Bytes,
        expires: Option<String>,
    },
}

/// Most rendered pages of completed exports kept.
const MAX_RENDERED_PAGES: usize = 4_096;

/// Completed exports' manifest pages as the partner gets them, so a partner polling a finished export
/// (or several partners, or a retrying client) costs no parsing or rewriting of the stored manifest.
/// Keyed by the job's last update: any change to the job (a deletion, expiry) makes a new key, so
/// every replica answers what its store says.
#[derive(Debug, Default)]
pub struct RenderedPages {
    pages: std::sync::Mutex<HashMap<PageKey, (DateTime<Utc>, bytes::Bytes)>>,
}

/// A job and a page number.
type PageKey = (Uuid, usize);

impl RenderedPages {
    fn get(&self, job: &Job, page: usize) -> Option<bytes::Bytes> {
        let pages = self
            .pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match pages.get(&(job.id, page)) {
            Some((at, body)) if *at == job.updated_at => Some(body.clone()),
            _ => None,
        }
    }

    fn put(&self, job: &Job, page: usize, body: bytes::Bytes) {
        let mut pages = self
            .pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pages.len() >= MAX_RENDERED_PAGES {
            pages.clear();
        }
        pages.insert((job.id, page), (job.updated_at, body));
    }
}

/// Most characters of `X-Progress` passed on.
const MAX_PROGRESS_CHARS: usize = 100;

/// Finds a job the partner may see through `slug`/`env`: unknown, another destination's, deleted,
/// expired or never accepted are all the same 404, and nothing upstream is called.
pub async fn find_job(
    state: &AppState,
    caller: &Caller,
    slug: &str,
    env: &str,
    job_id: &str,
) -> Result<(Arc<Connector>, Job), GatewayError> {
    let not_found = || {
        GatewayError::NotFound("No such export job for this destination and environment.".into())
    };
    let connector = state.registry.get(slug, env).ok_or_else(not_found)?;
    crate::observe::context::set_target(connector.slug.as_str(), connector.environment.as_str());
    caller.authorize(connector.slug.as_str(), connector.environment)?;
    let id = Uuid::parse_str(job_id).map_err(|_| not_found())?;
    let job = state.store.get(id).await?.ok_or_else(not_found)?;
    if job.destination != connector.slug.as_str()
        || job.environment != connector.environment.as_str()
    {
        return Err(not_found());
    }
    // Another source's job is not there, as far as this caller can tell (OWASP API1).
    if let Some(source) = caller.source()
        && job.source_key != source.id.to_string()
    {
        return Err(not_found());
    }
    // Everything done for a job is found under the Log ID of its kick-off.
    crate::observe::context::set_log_id(job.log_id);
    crate::observe::context::set_job(job.id);
    if caller.source().is_none() {
        crate::observe::context::set_source(&job.source_key);
    }
    match job.state {
        JobState::Deleted => Err(GatewayError::NotFound(
            "This export job was deleted.".into(),
        )),
        JobState::Expired => Err(GatewayError::NotFound(
            "This export job's files have expired.".into(),
        )),
        // No status URL was ever given for these: the kick-off failed, or its outcome is unknown.
        JobState::Failed | JobState::KickoffUnknown => Err(not_found()),
        _ => Ok((connector, job)),
    }
}

/// `GET …/export-status/{jobId}`.
pub async fn export_status(
    state: &AppState,
    caller: &Caller,
    slug: &str,
    env: &str,
    job_id: &str,
) -> Result<StatusView, Failure> {
    let (connector, job) = find_job(state, caller, slug, env, job_id).await?;
    let fail = |e: GatewayError| Failure::new(e, Some(job.log_id));
    let now = Utc::now();
    match job.state {
        JobState::Completed => page_view(state, &connector, &job, 0, now).map_err(fail),
        // The same answer on every poll: what the EHR said when it reported the failure.
        JobState::ExportFailed => Err(fail(recorded_failure(&job))),
        JobState::Pending => Ok(StatusView::InProgress {
            progress: None,
            retry_after: 1,
            manifest: None,
        }),
        _ => match job.next_poll_at {
            // The EHR asked for patience: answer from the store, however many partners or replicas ask.
            Some(next) if next > now => page_view(state, &connector, &job, 0, now).map_err(fail),
            _ => refresh(state, &connector, &job, now).await.map_err(fail),
        },
    }
}

/// `GET …/export-manifest/{jobId}/{page}`: a further page of the manifest (page 0 is the status
/// answer). While the export runs, a page the EHR has listed so far answers 202 with it; a page not
/// there yet answers 202 without a body (the partner polls again), or 404 once the export is done.
pub async fn export_page(
    state: &AppState,
    caller: &Caller,
    slug: &str,
    env: &str,
    job_id: &str,
    page: &str,
) -> Result<StatusView, Failure> {
    let (connector, job) = find_job(state, caller, slug, env, job_id).await?;
    let fail = |e: GatewayError| Failure::new(e, Some(job.log_id));
    let page: usize = page
        .parse()
        .map_err(|_| fail(GatewayError::NotFound("No such manifest page.".into())))?;
    match job.state {
        JobState::ExportFailed => Err(fail(recorded_failure(&job))),
        _ => page_view(state, &connector, &job, page, Utc::now()).map_err(fail),
    }
}

/// Page `page` of what the store holds for `job`, as the partner sees it.
fn page_view(
    state: &AppState,
    connector: &Connector,
    job: &Job,
    page: usize,
    now: DateTime<Utc>,
) -> Result<StatusView, GatewayError> {
    if job.state == JobState::Completed
        && let Some(manifest) = state.rendered.get(job, page)
    {
        return Ok(StatusView::Complete {
            manifest,
            expires: job.expires.clone(),
        });
    }
    let pages = match job.manifest.as_deref() {
        Some(stored) => manifest::pages(stored).map_err(GatewayError::Internal)?,
        None => Vec::new(),
    };
    let rewritten = (page < pages.len()).then(|| partner_page(state, connector, job, &pages, page));
    if job.state == JobState::Completed {
        return match rewritten {
            Some(manifest) => {
                let body = bytes::Bytes::from(manifest.to_string());
                state.rendered.put(job, page, body.clone());
                Ok(StatusView::Complete {
                    manifest: body,
                    expires: job.expires.clone(),
                })
            }
            None => Err(GatewayError::NotFound("No such manifest page.".into())),
        };
    }
    Ok(StatusView::InProgress {
        progress: job.progress.clone(),
        retry_after: job.next_poll_at.map_or(1, |next| remaining_secs(next, now)),
        manifest: rewritten,
    })
}

fn remaining_secs(next: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let ms = (next - now).num_milliseconds().max(0) as u64;
    ms.div_ceil(1000).max(1)
}

/// Page `k` of `pages` with every URL pointing at the gateway and nothing naming the EHR.
pub fn partner_page(
    state: &AppState,
    connector: &Connector,
    job: &Job,
    pages: &[Value],
    k: usize,
) -> Value {
    let base = state.fhir_base(connector.slug.as_str(), connector.environment);
    let file_url = |n: usize| format!("{base}/export-file/{}/{n}", job.id);
    let page_url = |p: usize| format!("{base}/export-manifest/{}/{p}", job.id);
    let mut known = HashMap::new();
    if let Some(status) = &job.upstream_status_url {
        known.insert(
            status.clone(),
            state.status_url(connector.slug.as_str(), connector.environment, job.id),
        );
    }
    for (n, file) in manifest::files(pages).into_iter().enumerate() {
        known.insert(file.url, file_url(n));
    }
    for (p, page) in pages.iter().enumerate() {
        if let Some(next) = manifest::next_link(page) {
            known.insert(next.to_owned(), page_url(p + 1));
        }
    }
    let first_file = pages[..k].iter().map(manifest::file_count).sum();
    let request = format!("{base}/{}", partner_request(job));
    manifest::Rewrite {
        request: &request,
        requires_access_token: crate::auth::auth_required(&state.settings),
        first_file,
        file_url: &file_url,
        next: (k + 1 < pages.len()).then(|| page_url(k + 1)),
        names_ehr: &|text| connector.names_ehr(text),
        known: &known,
    }
    .page(&pages[k])
}

/// The partner's kick-off relative to the FHIR base: as recorded, or (jobs accepted before it was)
/// the operation alone.
fn partner_request(job: &Job) -> String {
    if let Some(request) = &job.request {
        return request.clone();
    }
    match job.group_id.as_deref() {
        Some(g) => format!("Group/{g}/$export"),
        None if job.event_type == "patient-export" => "Patient/$export".to_owned(),
        None => "$export".to_owned(),
    }
}

fn clean_progress(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_control())
        .take(MAX_PROGRESS_CHARS)
        .collect()
}

/// Whether the job's source wants to hear when the job ends.
fn notify_wanted(state: &AppState, job: &Job) -> bool {
    state
        .settings
        .source(&job.source_key)
        .is_some_and(|s| s.notify_url.is_some())
}

/// Polls the upstream for `job` and records what it says. Shared by partner requests and the poller.
pub async fn refresh(
    state: &AppState,
    connector: &Connector,
    job: &Job,
    now: DateTime<Utc>,
) -> Result<StatusView, GatewayError> {
    let url = job.upstream_status_url.as_deref().ok_or_else(|| {
        GatewayError::Internal("accepted job without an upstream status URL".into())
    })?;
    let default_wait = state.settings.jobs.poll_interval_secs;
    let answer = match connector.status(url, job.log_id).await {
        Ok(a) => a,
        Err(e) => {
            poll_failed(state, job, None, now, &e).await?;
            return Err(GatewayError::Upstream(e));
        }
    };
    match answer.status {
        202 => {
            let progress = answer
                .headers
                .get("x-progress")
                .and_then(|v| v.to_str().ok())
                .map(clean_progress);
            let wait = retry_after_secs(&answer.headers, now, connector.max_retry_after_secs)
                .unwrap_or_else(|| {
                    no_retry_after_wait(
                        job,
                        now,
                        default_wait,
                        state.settings.worker.max_backoff_secs,
                    )
                });
            // A partial manifest (Bulk Data v3) and the pages it links to so far; a body that is not
            // one is the plain 202 it is for every other EHR.
            let partial = match partial_manifest(&answer.body) {
                Some(first) => match follow_pages(connector, first, job.log_id, true).await {
                    Ok(pages) => Some(pages),
                    Err(error) => {
                        poll_failed(state, job, None, now, &error).await?;
                        return Err(GatewayError::Upstream(error));
                    }
                },
                None => None,
            };
            let update = StatusUpdate::InProgress {
                progress: progress.clone(),
                retry_after_secs: wait,
                manifest: partial.as_ref().map(|p| Value::from(p.clone()).to_string()),
            };
            state.store.record_status(job.id, &update, now).await?;
            let manifest = partial
                .filter(|p| !p.is_empty())
                .map(|pages| partner_page(state, connector, job, &pages, 0));
            Ok(StatusView::InProgress {
                progress: progress.or(job.progress.clone()),
                retry_after: wait.max(1),
                manifest,
            })
        }
        200 => {
            // A 200 that is not a usable manifest, or whose further pages cannot be had, is a failed
            // poll like a 5xx: backed off, counted, and after `max_poll_failures` the job fails; it is
            // not re-polled at every tick.
            let usable = serde_json::from_slice::<Value>(&answer.body)
                .map_err(|_| "a completion manifest that is not JSON".to_owned())
                .and_then(|v| {
                    manifest::check(&v).map(|()| v).map_err(|why| {
                        format!("a completion manifest the gateway cannot use: {why}")
                    })
                })
                .map_err(UpstreamError::BadAnswer);
            let pages = match usable {
                Ok(first) => follow_pages(connector, first, job.log_id, false).await,
                Err(e) => Err(e),
            };
            let pages = match pages {
                Ok(pages) => pages,
                Err(error) => {
                    poll_failed(state, job, None, now, &error).await?;
                    return Err(GatewayError::Upstream(error));
                }
            };
            let expires = answer
                .headers
                .get("expires")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            state
                .store
                .record_status(
                    job.id,
                    &StatusUpdate::Completed {
                        manifest: Value::from(pages.clone()).to_string(),
                        expires: expires.clone(),
                        notify: notify_wanted(state, job),
                    },
                    now,
                )
                .await?;
            tracing::info!(message = "Export completed.", log_id = %job.log_id, job_id = %job.id,
                pages = pages.len(), files = manifest::files(&pages).len());
            Ok(StatusView::Complete {
                manifest: bytes::Bytes::from(
                    partner_page(state, connector, job, &pages, 0).to_string(),
                ),
                expires,
            })
        }
        404 | 410 => {
            state
                .store
                .record_status(job.id, &StatusUpdate::Expired, now)
                .await?;
            Err(GatewayError::NotFound(
                "The EHR no longer has this export job.".into(),
            ))
        }
        _ => {
            let error = connector.classify(&answer, "a status request");
            match &error {
                // A client error other than throttling means the export failed (Bulk Data IG): that
                // answer is kept, and every later poll gets it again.
                UpstreamError::Rejected { status, issues } => {
                    let failure = failure_record(*status, issues);
                    let update = StatusUpdate::ExportFailed {
                        error_code: format!("upstream-{status}"),
                        notify: notify_wanted(state, job),
                        failure: Some(failure.clone()),
                    };
                    state.store.record_status(job.id, &update, now).await?;
                    return Err(recorded(&failure).unwrap_or(GatewayError::Upstream(error)));
                }
                UpstreamError::Throttled { retry_after, .. } => {
                    poll_failed(state, job, *retry_after, now, &error).await?;
                }
                UpstreamError::Unavailable { retry_after } => {
                    poll_failed(state, job, Some(*retry_after), now, &error).await?;
                }
                _ => poll_failed(state, job, None, now, &error).await?,
            }
            Err(GatewayError::Upstream(error))
        }
    }
}

/// The partial manifest a 202 carries, when it carries a usable one.
fn partial_manifest(body: &[u8]) -> Option<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    match manifest::check(&value) {
        Ok(()) => Some(value),
        Err(why) => {
            tracing::debug!(message = "A 202 body that is not a usable partial manifest; ignored.", why = %why);
            None
        }
    }
}

/// `first` and every page its `next` links lead to, in order, fetched from the EHR with the
/// destination's credentials (the links must be on its origin). For a complete manifest every page
/// must answer 200 with a usable manifest; for a partial one, a page the EHR has not made yet (a 202
/// without one) ends the list for now.
async fn follow_pages(
    connector: &Connector,
    first: Value,
    log_id: Uuid,
    partial: bool,
) -> Result<Vec<Value>, UpstreamError> {
    let mut seen = std::collections::HashSet::new();
    let mut pages = vec![first];
    while let Some(next) = pages
        .last()
        .and_then(manifest::next_link)
        .map(str::to_owned)
    {
        if !seen.insert(next.clone()) || pages.len() >= manifest::MAX_PAGES {
            return Err(UpstreamError::BadAnswer(format!(
                "manifest pages that loop or run past {}",
                manifest::MAX_PAGES
            )));
        }
        let answer = connector.status(&next, log_id).await?;
        match answer.status {
            202 if partial => match partial_manifest(&answer.body) {
                Some(page) => pages.push(page),
                None => break,
            },
            200 => {
                let page: Value = serde_json::from_slice(&answer.body).map_err(|_| {
                    UpstreamError::BadAnswer("a manifest page that is not JSON".into())
                })?;
                manifest::check(&page).map_err(|why| {
                    UpstreamError::BadAnswer(format!(
                        "a manifest page the gateway cannot use: {why}"
                    ))
                })?;
                pages.push(page);
            }
            _ => {
                return Err(connector.classify(&answer, "a manifest page request"));
            }
        }
    }
    Ok(pages)
}

/// The wait when the EHR gives no Retry-After: half the job's age, at least `base`, at most `max`,
/// with jitter. Each wait is half the time elapsed so far, so waits grow geometrically.
fn no_retry_after_wait(job: &Job, now: DateTime<Utc>, base: u64, max: u64) -> u64 {
    let age = (now - job.created_at).num_seconds().max(0) as u64;
    super::backoff::jitter((age / 2).clamp(base, max.max(base)))
}

/// Records a failed poll: the next one waits `wait` (the EHR's Retry-After) or backs off exponentially.
/// After `[worker] max_poll_failures` in a row the job fails with `upstream-poll-failed`.
async fn poll_failed(
    state: &AppState,
    job: &Job,
    wait: Option<u64>,
    now: DateTime<Utc>,
    error: &UpstreamError,
) -> Result<(), GatewayError> {
    let failures = job.poll_failures.saturating_add(1);
    // An EHR that says "not now" (429, or 503 with Retry-After) is waited for, never given up on.
    let asked_to_wait = matches!(
        error,
        UpstreamError::Throttled { .. } | UpstreamError::Unavailable { .. }
    );
    if !asked_to_wait && failures >= i64::from(state.settings.worker.max_poll_failures) {
        tracing::warn!(message = "Giving the export up: its status polls keep failing.",
            log_id = %job.log_id, job_id = %job.id, failures, last = %error);
        let failure = failure_record(
            502,
            &[Issue::general(
                IssueCode::Exception,
                format!(
                    "The gateway gave this export up after {failures} failed status polls in a row; the last: {error}."
                ),
            )],
        );
        let update = StatusUpdate::ExportFailed {
            error_code: "upstream-poll-failed".to_owned(),
            notify: notify_wanted(state, job),
            failure: Some(failure),
        };
        state.store.record_status(job.id, &update, now).await?;
        return Ok(());
    }
    let wait = wait.unwrap_or_else(|| {
        backoff_secs(
            state.settings.jobs.poll_interval_secs,
            job.poll_failures,
            state.settings.worker.max_backoff_secs,
        )
    });
    let update = StatusUpdate::PollFailed {
        retry_after_secs: wait,
    };
    state.store.record_status(job.id, &update, now).await?;
    Ok(())
}

/// What a failed export answers on every poll: the status and the OperationOutcome, as stored.
fn failure_record(status: u16, issues: &[Issue]) -> String {
    serde_json::json!({"status": status, "outcome": OperationOutcome::from_issues(issues)})
        .to_string()
}

fn recorded(text: &str) -> Option<GatewayError> {
    let value: Value = serde_json::from_str(text).ok()?;
    let status = u16::try_from(value.get("status")?.as_u64()?).ok()?;
    let outcome: OperationOutcome = serde_json::from_value(value.get("outcome")?.clone()).ok()?;
    let issues = outcome
        .issue
        .iter()
        .map(|i| i.to_issue(|d| d.unwrap_or_default().to_owned()))
        .collect();
    Some(GatewayError::Upstream(UpstreamError::Rejected {
        status,
        issues,
    }))
}

/// The answer for a job in `export-failed`: what was recorded, or (jobs failed before failures were
/// recorded) a 502 naming the error code.
fn recorded_failure(job: &Job) -> GatewayError {
    job.failure
        .as_deref()
        .and_then(recorded)
        .unwrap_or_else(|| {
            GatewayError::Upstream(UpstreamError::BadAnswer(format!(
                "the EHR reported that this export failed ({})",
                job.error_code.as_deref().unwrap_or("no reason given")
            )))
        })
}

/// `DELETE …/export-status/{jobId}`: the upstream job first, then the gateway's.
pub async fn delete_export(
    state: &AppState,
    caller: &Caller,
    slug: &str,
    env: &str,
    job_id: &str,
) -> Result<Uuid, Failure> {
    let (connector, job) = find_job(state, caller, slug, env, job_id).await?;
    delete_job(state, &connector, &job)
        .await
        .map_err(|e| Failure::new(e, Some(job.log_id)))?;
    Ok(job.log_id)
}

/// Deletes `job` at the EHR (when it was accepted there), then in the store.
pub async fn delete_job(
    state: &AppState,
    connector: &Connector,
    job: &Job,
) -> Result<(), GatewayError> {
    if let Some(url) = &job.upstream_status_url {
        connector.delete(url, job.log_id).await?;
    }
    state
        .store
        .record_status(job.id, &StatusUpdate::Deleted, Utc::now())
        .await?;
    tracing::info!(message = "Export deleted.", log_id = %job.log_id, job_id = %job.id);
    Ok(())
}

/// A link maker for attachment URLs (see [`super::attachments::link_maker`]).
pub type LinkMaker = Box<dyn FnMut(&[u8], &mut Vec<u8>) -> bool + Send>;

/// An export file, opened upstream.
pub struct OpenedFile {
    pub response: reqwest::Response,
    pub log_id: Uuid,
    /// Set when the file's attachment URLs are to be rewritten as it streams.
    pub links: Option<LinkMaker>,
}

/// `GET …/export-file/{jobId}/{fileId}`: the upstream response, ready to stream.
pub async fn open_export_file(
    state: &AppState,
    caller: &Caller,
    slug: &str,
    env: &str,
    job_id: &str,
    file_id: &str,
    pass_on: &FileRequestHeaders,
) -> Result<OpenedFile, Failure> {
    let (connector, job) = find_job(state, caller, slug, env, job_id).await?;
    let fail = |e: GatewayError| Failure::new(e, Some(job.log_id));
    let no_file = || {
        fail(GatewayError::NotFound(
            "No such file in this export.".into(),
        ))
    };
    // Files of a complete manifest, and of a partial one while the export runs.
    let Some(stored) = job.manifest.as_deref() else {
        return Err(no_file());
    };
    let pages = manifest::pages(stored).map_err(|e| fail(GatewayError::Internal(e)))?;
    let index: usize = file_id.parse().map_err(|_| no_file())?;
    let file = manifest::files(&pages)
        .into_iter()
        .nth(index)
        .ok_or_else(no_file)?;
    // An output file's type is what the manifest says it holds; a type the caller's scopes do not
    // grant is refused before the EHR is asked for it. Error files (OperationOutcomes about the export
    // itself) and deletion Bundles go to whoever may read the export.
    let resource_type = file.resource_type.as_str();
    if file.section == "output" && !resource_type.is_empty() && !caller.reads(resource_type) {
        return Err(fail(GatewayError::Forbidden(
            crate::domain::Issue::general(
                crate::domain::IssueCode::Forbidden,
                format!(
                    "This client's scopes do not let it read {} resources.",
                    crate::domain::shorten(resource_type)
                ),
            ),
        )));
    }
    // A file that may hold attachments is rewritten as it streams: sent whole (a byte range of the
    // EHR's file is not one of the rewritten file) and unencoded (the rewrite reads the text).
    let attachments =
        file.section == "output" && crate::fhir::attachments::may_hold_attachments(resource_type);
    let rewriting;
    let pass_on = if attachments {
        rewriting = FileRequestHeaders::default();
        &rewriting
    } else {
        pass_on
    };
    let response = connector
        .open_file(&file.url, manifest::requires_access_token(&pages), pass_on, job.log_id)
        .await
        .map_err(|e| {
            tracing::warn!(message = "File download refused or failed.", log_id = %job.log_id, job_id = %job.id, error = %e);
            fail(file_error(e))
        })?;
    match response.status().as_u16() {
        200 | 206 => {
            let encoded = response
                .headers()
                .get(reqwest::header::CONTENT_ENCODING)
                .is_some_and(|e| e.as_bytes() != b"identity");
            let links = (attachments && !encoded)
                .then(|| Box::new(super::attachments::link_maker(state, &connector, job.id)) as _);
            Ok(OpenedFile {
                response,
                log_id: job.log_id,
                links,
            })
        }
        404 | 410 => {
            state
                .store
                .record_status(job.id, &StatusUpdate::Expired, Utc::now())
                .await
                .map_err(|e| fail(e.into()))?;
            Err(fail(GatewayError::NotFound(
                "The EHR no longer has this file; the export has expired.".into(),
            )))
        }
        _ => Err(fail(
            download_refused(&connector, response, "a file request").await,
        )),
    }
}

/// What a file or attachment answer other than 200/206/404/410 means: 416 for a Range outside it,
/// else the EHR's refusal classified like any other (its texts scrubbed of the EHR's URLs).
pub(crate) async fn download_refused(
    connector: &Connector,
    response: reqwest::Response,
    what: &str,
) -> GatewayError {
    let status = response.status().as_u16();
    if status == 416 {
        return GatewayError::RangeNotSatisfiable;
    }
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap_or_default();
    let answer = crate::connectors::http::UpstreamAnswer {
        status,
        headers,
        body,
    };
    GatewayError::Upstream(connector.classify(&answer, what))
}

pub(crate) fn file_error(e: FileError) -> GatewayError {
    match e {
        FileError::HostNotAllowed(_) | FileError::PrivateAddress => {
            GatewayError::FileRefused(e.to_string())
        }
        FileError::TooManyRedirects | FileError::BadRedirect => {
            GatewayError::Upstream(UpstreamError::BadAnswer(e.to_string()))
        }
        FileError::Transport(TransportError::Timeout) => {
            GatewayError::Upstream(UpstreamError::Timeout)
        }
        FileError::Transport(_) => GatewayError::Upstream(UpstreamError::Unreachable),
        FileError::Upstream(e) => GatewayError::Upstream(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_cut_to_100_characters_without_control_characters() {
        assert_eq!(clean_progress(&"x".repeat(300)).len(), 100);
        assert_eq!(clean_progress("50%\r\nInjected: 1"), "50%Injected: 1");
    }
}
