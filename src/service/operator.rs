//! What an operator may do to a job from the dashboard: poll the EHR now, or cancel the export
//! (DELETE upstream). Each runs like the poller's work: its EHR calls go to the message log under the
//! job's Log ID, and its log lines carry the job's fields.

use super::export::{delete_job, refresh};
use crate::connectors::Connector;
use crate::error::GatewayError;
use crate::state::AppState;
use crate::store::{Job, JobState};
use chrono::Utc;
use std::sync::Arc;
use uuid::Uuid;

/// What an operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ask the EHR for the export's status now, whatever wait it asked for.
    PollNow,
    /// Delete the export at the EHR and in the gateway.
    Cancel,
}

impl Action {
    fn event_type(self) -> &'static str {
        match self {
            Action::PollNow => "operator-poll",
            Action::Cancel => "operator-cancel",
        }
    }

    /// Whether a job in `state` can take this action.
    pub fn allowed(self, state: JobState) -> bool {
        match self {
            Action::PollNow => state == JobState::Accepted,
            Action::Cancel => matches!(
                state,
                JobState::Accepted | JobState::Completed | JobState::ExportFailed
            ),
        }
    }
}

/// Runs `action` on the job `job_id`; the job as stored afterwards.
pub async fn act(state: &AppState, job_id: Uuid, action: Action) -> Result<Job, GatewayError> {
    let job = state
        .store
        .get(job_id)
        .await?
        .ok_or_else(|| GatewayError::NotFound("No job with this id.".into()))?;
    if !action.allowed(job.state) {
        return Err(GatewayError::Conflict(format!(
            "A job that is {} cannot be {}.",
            job.state.as_str(),
            match action {
                Action::PollNow => "polled (only an export in progress is)",
                Action::Cancel => "cancelled",
            }
        )));
    }
    let connector = state
        .registry
        .get(&job.destination, &job.environment)
        .ok_or_else(|| {
            GatewayError::NotFound("This job's destination is no longer configured.".into())
        })?;
    let result = super::on_behalf_of_job(
        state,
        &job,
        action.event_type(),
        run(state, &connector, &job, action),
    )
    .await;
    tracing::info!(
        message = "Operator action on a job.",
        action = action.event_type(),
        log_id = %job.log_id,
        job_id = %job.id,
        ok = result.is_ok(),
    );
    result?;
    state
        .store
        .get(job_id)
        .await?
        .ok_or_else(|| GatewayError::NotFound("No job with this id.".into()))
}

async fn run(
    state: &AppState,
    connector: &Arc<Connector>,
    job: &Job,
    action: Action,
) -> Result<(), GatewayError> {
    match action {
        Action::PollNow => refresh(state, connector, job, Utc::now()).await.map(|_| ()),
        Action::Cancel => delete_job(state, connector, job).await,
    }
}
