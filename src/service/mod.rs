//! The use cases, between the HTTP layer and the EHRs: kick-off, the export's status, files and delete,
//! and the background poller with its notifications. Speaks domain errors; the
//! HTTP status of each is known only to `api::error`.

pub mod attachments;
pub mod backoff;
pub mod export;
pub mod kickoff;
pub mod operator;
pub mod poller;
pub mod retention;

use crate::observe::context::RequestContext;
use crate::state::AppState;
use crate::store::Job;
use tracing::Instrument;

/// Runs `work` for `job` outside any partner request (the poller, an operator's action) as a request
/// would run: its EHR calls go to the message log under the job's Log ID as `event_type`, and its log
/// lines carry the job's fields.
pub(crate) async fn on_behalf_of_job<T>(
    state: &AppState,
    job: &Job,
    event_type: &'static str,
    work: impl std::future::Future<Output = T>,
) -> T {
    let span = tracing::info_span!(
        "job",
        log_id = tracing::field::Empty,
        attempt_id = tracing::field::Empty,
        job_id = %job.id,
        source = %job.source_key,
        destination = %job.destination,
        environment = %job.environment,
    );
    let ctx = RequestContext::new(job.log_id, uuid::Uuid::now_v7(), span.clone());
    let out = ctx
        .clone()
        .scope(async {
            crate::observe::context::set_job(job.id);
            crate::observe::context::set_source(&job.source_key);
            crate::observe::context::set_event_type(event_type);
            work.await
        })
        .instrument(span)
        .await;
    for call in ctx.snapshot().upstream {
        state.log.record(call);
    }
    out
}
