//! The kick-off use case: validate, route, reserve the job, call the EHR, record the outcome.

use crate::connectors::Connector;
use crate::domain::{ExportKickoff, ExportKind, Issue};
use crate::envelope::reader::Reader;
use crate::envelope::{Meta, RouteTarget, normalise_native, parse_envelope, read_params};
use crate::error::{Failure, GatewayError};
use crate::state::AppState;
use crate::store::{AttemptOutcome, Claim, NewJob};
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// How the partner sent the kick-off.
#[derive(Debug, Clone)]
pub enum KickoffForm {
    /// A Redox envelope (JSON body).
    Envelope(Value),
    /// FHIR-native: query-string pairs and/or a `Parameters` body, flattened.
    Native(Vec<(String, Value)>),
}

/// A kick-off as it arrived, before any check.
#[derive(Debug, Clone)]
pub struct KickoffRequest {
    pub slug: String,
    pub environment: String,
    pub kind: ExportKind,
    pub path_group_id: Option<String>,
    pub form: KickoffForm,
    /// `Prefer: handling=lenient` was sent.
    pub lenient: bool,
    /// `Prefer: retry-unknown-kickoff` was sent: send a kick-off whose earlier outcome is unknown again.
    pub retry_unknown: bool,
    /// Who is asking.
    pub caller: crate::auth::Caller,
}

/// A kick-off the EHR accepted (now or on an earlier attempt of the same Log ID).
#[derive(Debug, Clone)]
pub struct Accepted {
    pub job_id: Uuid,
    pub log_id: Uuid,
    pub attempt_id: Uuid,
    pub content_location: String,
    pub dropped: Vec<String>,
    /// What the gateway changed for the caller's scopes: the `_type` it sent when none was given.
    pub scoped: Option<ScopedTypes>,
    /// The request's Meta (envelope form only).
    pub meta: Option<Meta>,
    /// True when an earlier attempt had already been accepted and no upstream call was made.
    pub replayed: bool,
}

/// How a kick-off without `_type` was fitted to scopes that do not cover every resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopedTypes {
    /// `_type` was set to the types the scopes grant (comma-separated, as sent upstream).
    Narrowed(String),
    /// The destination takes no `_type`: the export is whole, and files of other types are refused.
    FilesFiltered(String),
}

/// Fits a planned kick-off to the caller's scopes: a `_type` or `_typeFilter` naming a type the scopes
/// do not grant is refused (403); without `_type`, the export is narrowed to the granted types where the
/// destination takes `_type`.
fn within_scopes(
    caller: &crate::auth::Caller,
    connector: &Connector,
    mut plan: crate::connectors::plan::KickoffPlan,
) -> Result<(crate::connectors::plan::KickoffPlan, Option<ScopedTypes>), GatewayError> {
    use crate::domain::{IssueCode, Param, ResourceTypes};
    let Some(scopes) = caller.scopes() else {
        return Ok((plan, None));
    };
    let forbidden = |param: Param, names: Vec<&str>| {
        GatewayError::Forbidden(Issue::at(
            IssueCode::Forbidden,
            param.as_str(),
            format!(
                "names {}, which this client's scopes ({scopes}) do not let it read",
                names.join(", ")
            ),
        ))
    };
    let params = &plan.kickoff.params;
    if let Some(types) = &params.types {
        let refused: Vec<&str> = types
            .iter()
            .map(|t| t.as_str())
            .filter(|t| !scopes.reads(t))
            .collect();
        if !refused.is_empty() {
            return Err(forbidden(Param::Type, refused));
        }
    }
    if let Some(filters) = &params.type_filters {
        let mut refused: Vec<&str> = filters
            .iter()
            .map(|f| f.resource_type.as_str())
            .filter(|t| !scopes.reads(t))
            .collect();
        refused.dedup();
        if !refused.is_empty() {
            return Err(forbidden(Param::TypeFilter, refused));
        }
    }
    if params.types.is_some() {
        return Ok((plan, None));
    }
    let Some(granted) = scopes.readable_types() else {
        return Ok((plan, None));
    };
    let exportable: Vec<&str> = granted
        .iter()
        .map(|t| t.as_str())
        .filter(|t| connector.capabilities().supports_type(t))
        .collect();
    if exportable.is_empty() {
        return Err(GatewayError::Forbidden(Issue::at(
            IssueCode::Forbidden,
            Param::Type.as_str(),
            format!(
                "This client's scopes ({scopes}) grant no resource type destination '{}' exports",
                connector.slug
            ),
        )));
    }
    let wire = exportable.join(",");
    if !connector.capabilities().supports(Param::Type) {
        return Ok((plan, Some(ScopedTypes::FilesFiltered(wire))));
    }
    let types = ResourceTypes::try_from(wire.as_str()).map_err(|e| {
        GatewayError::Internal(format!("granted types do not make a _type list: {e:?}"))
    })?;
    plan.kickoff.params.types = Some(types);
    Ok((plan, Some(ScopedTypes::Narrowed(wire))))
}

/// A validated kick-off with its envelope Meta, when there was one.
struct Parsed {
    kickoff: ExportKickoff,
    meta: Option<Meta>,
    unknown: Vec<String>,
}

fn parse(req: &KickoffRequest) -> Result<Parsed, Vec<Issue>> {
    let target = RouteTarget {
        kind: req.kind,
        path_group_id: req.path_group_id.as_deref(),
    };
    match &req.form {
        KickoffForm::Envelope(body) => parse_envelope(body, target).map(|e| Parsed {
            kickoff: e.kickoff,
            meta: Some(e.meta),
            unknown: Vec::new(),
        }),
        KickoffForm::Native(pairs) => {
            let native = normalise_native(pairs);
            let mut issues = native.issues;
            let level = target.level(&mut issues);
            let mut r = Reader::new(&native.map, "", &mut issues);
            let params = read_params(&mut r, req.kind);
            match level {
                Some(level) if issues.is_empty() => Ok(Parsed {
                    kickoff: ExportKickoff { level, params },
                    meta: None,
                    unknown: native.unknown,
                }),
                _ => Err(issues),
            }
        }
    }
}

/// The envelope's `Meta.Logs[0]` ids, read before anything else is checked, so that even a refused
/// envelope is filed (message log, `X-Request-ID`) under the partner's own Log ID and AttemptID.
fn envelope_ids(form: &KickoffForm) -> (Option<Uuid>, Option<Uuid>) {
    let KickoffForm::Envelope(body) = form else {
        return (None, None);
    };
    let id = |field: &str| {
        body.pointer(&format!("/Meta/Logs/0/{field}"))
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
    };
    (id("ID"), id("AttemptID"))
}

/// Runs a kick-off end to end.
pub async fn kick_off(state: &AppState, req: KickoffRequest) -> Result<Accepted, Failure> {
    let (early_log_id, partner_attempt_id) = envelope_ids(&req.form);
    if let Some(id) = early_log_id {
        crate::observe::context::set_log_id(id);
    }
    if let Some(id) = partner_attempt_id {
        crate::observe::context::set_attempt_id(id);
    }
    let early = |e: GatewayError| Failure::new(e, early_log_id);
    let connector: Arc<Connector> =
        state
            .registry
            .get(&req.slug, &req.environment)
            .ok_or_else(|| {
                early(GatewayError::NotFound(format!(
                    "No destination '{}' is configured for environment '{}'.",
                    crate::domain::shorten(&req.slug),
                    crate::domain::shorten(&req.environment)
                )))
            })?;
    crate::observe::context::set_target(connector.slug.as_str(), connector.environment.as_str());
    req.caller
        .authorize(connector.slug.as_str(), connector.environment)
        .map_err(early)?;
    // On an open gateway the source is whoever the envelope says; recorded even when it is refused.
    if let (None, KickoffForm::Envelope(body)) = (req.caller.source(), &req.form)
        && let Some(claimed) = body
            .pointer("/Meta/Source/ID")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
    {
        crate::observe::context::set_source(&claimed.to_string());
    }
    let parsed = parse(&req).map_err(|issues| early(GatewayError::Invalid(issues)))?;
    let claimed_source = parsed.meta.as_ref().and_then(Meta::source_id);
    if let (Some(source), Some(claimed)) = (req.caller.source(), claimed_source)
        && source.id != claimed
    {
        return Err(early(GatewayError::Forbidden(Issue::at(
            crate::domain::IssueCode::Forbidden,
            "Meta.Source.ID",
            "must be the id of the source the API key belongs to",
        ))));
    }
    // Redox routes by Meta.Destinations: when this destination has an id and the envelope names
    // destinations by id, one of them must be it.
    if let (Some(expected), Some(meta)) = (connector.destination_id, parsed.meta.as_ref()) {
        let named: Vec<Uuid> = meta.destinations.iter().filter_map(|d| d.id).collect();
        if !named.is_empty() && !named.contains(&expected) {
            return Err(early(GatewayError::Invalid(vec![Issue::at(
                crate::domain::IssueCode::Value,
                "Meta.Destinations",
                format!(
                    "does not name destination '{}' by its id: the envelope was routed to a destination it is not addressed to",
                    connector.slug
                ),
            )])));
        }
    }
    let request_log_id = parsed.meta.as_ref().and_then(Meta::log_id);
    // The envelope's Log ID; else the partner's X-Request-ID (when a UUID) or a new one, as the
    // request's context already holds.
    let log_id = request_log_id
        .or_else(crate::observe::context::log_id)
        .unwrap_or_else(Uuid::now_v7);
    crate::observe::context::set_log_id(log_id);
    if let (None, Some(claimed)) = (req.caller.source(), claimed_source) {
        crate::observe::context::set_source(&claimed.to_string());
    }
    let fail = |e: GatewayError| Failure::new(e, Some(log_id));

    let plan = connector
        .plan(parsed.kickoff, &parsed.unknown, req.lenient)
        .map_err(|issues| fail(GatewayError::Invalid(issues)))?;
    let (plan, notices) = within_scopes(&req.caller, &connector, plan).map_err(fail)?;
    let upstream = connector.kickoff_request(&plan, log_id);
    // The partner's AttemptID when it sent one (echoed, as in seeds 000 and 004); else the one the
    // request's context minted.
    let attempt_id = partner_attempt_id
        .or_else(crate::observe::context::attempt_id)
        .unwrap_or_else(Uuid::now_v7);
    let new_job = NewJob {
        // Time-ordered: the job table's indexes grow at one end (see `startup::initial_log_id`).
        id: Uuid::now_v7(),
        source_key: req
            .caller
            .job_owner(claimed_source.map(|id| id.to_string())),
        log_id,
        attempt_id,
        destination: connector.slug.as_str().to_owned(),
        environment: connector.environment.as_str().to_owned(),
        event_type: req.kind.event_type().to_owned(),
        group_id: plan.kickoff.level.group_id().map(|g| g.as_str().to_owned()),
        fingerprint: upstream.fingerprint(&format!("{}/{}", connector.slug, connector.environment)),
        request: Some(crate::connectors::request::partner_request(&plan)),
        retry_unknown: req.retry_unknown,
    };
    let accepted = |job_id: Uuid, replayed: bool| Accepted {
        job_id,
        log_id,
        attempt_id,
        content_location: state.status_url(connector.slug.as_str(), connector.environment, job_id),
        dropped: plan.dropped.clone(),
        scoped: notices.clone(),
        meta: parsed.meta.clone(),
        replayed,
    };

    let job_id = match state
        .store
        .claim(
            &new_job,
            std::time::Duration::from_secs(state.settings.jobs.pending_stale_secs),
        )
        .await
        .map_err(|e| fail(e.into()))?
    {
        Claim::New => new_job.id,
        Claim::Retry { job_id, attempt } => {
            tracing::info!(message = "Retrying a failed kick-off.", log_id = %log_id, job_id = %job_id, attempt);
            job_id
        }
        Claim::Existing(job) => {
            crate::observe::context::set_job(job.id);
            tracing::info!(message = "Kick-off already accepted; answering from the job store.", log_id = %log_id, job_id = %job.id);
            return Ok(accepted(job.id, true));
        }
        Claim::InFlight => {
            return Err(fail(GatewayError::KickoffInFlight));
        }
        Claim::Unknown(job) => {
            crate::observe::context::set_job(job.id);
            tracing::warn!(message = "A kick-off with this Log ID has an unknown outcome; not sending it again unasked.", log_id = %log_id, job_id = %job.id);
            return Err(fail(GatewayError::KickoffUnknown));
        }
    };

    crate::observe::context::set_job(job_id);
    let Some(_slot) = connector.kickoff_slot() else {
        let error = GatewayError::RateLimited(1);
        let outcome = AttemptOutcome::Failed {
            error_code: "destination-busy".to_owned(),
            upstream_status: None,
        };
        if let Err(e) = state
            .store
            .finish_attempt(job_id, attempt_id, &outcome)
            .await
        {
            tracing::error!(message = "Could not record a refused attempt.", log_id = %log_id, error = %e);
        }
        tracing::warn!(message = "Destination at its cap of concurrent kick-offs.", log_id = %log_id, destination = %connector.slug);
        return Err(fail(error));
    };
    let started = Instant::now();
    let result = connector.kickoff(&upstream).await;
    let answered = Instant::now();
    let latency_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(status_url) => {
            let outcome = AttemptOutcome::Accepted {
                upstream_status_url: status_url.to_string(),
                upstream_status: 202,
            };
            // The EHR's answer is the next durable write: until it commits, a crash would leave the
            // job kickoff-unknown. The window is measured.
            state
                .store
                .finish_attempt(job_id, attempt_id, &outcome)
                .await
                .map_err(|e| fail(e.into()))?;
            state
                .metrics
                .kickoff_window(answered.elapsed().as_secs_f64());
            tracing::info!(
                message = "Kick-off accepted.",
                log_id = %log_id, attempt_id = %attempt_id, job_id = %job_id,
                destination = %connector.slug, environment = %connector.environment, latency_ms
            );
            Ok(accepted(job_id, false))
        }
        Err(e) => {
            let error = GatewayError::Upstream(e);
            tracing::warn!(
                message = "Upstream refused or failed the kick-off.",
                log_id = %log_id, attempt_id = %attempt_id, job_id = %job_id,
                destination = %connector.slug, environment = %connector.environment,
                code = error.code(), status = %error.status(), latency_ms
            );
            let upstream_status = match &error {
                GatewayError::Upstream(crate::connectors::UpstreamError::Rejected {
                    status,
                    ..
                }) => Some(*status),
                GatewayError::Upstream(crate::connectors::UpstreamError::ServerError {
                    status,
                }) => Some(*status),
                GatewayError::Upstream(crate::connectors::UpstreamError::Throttled { .. }) => {
                    Some(429)
                }
                _ => None,
            };
            let outcome = AttemptOutcome::Failed {
                error_code: error.code().to_owned(),
                upstream_status,
            };
            if let Err(store_error) = state
                .store
                .finish_attempt(job_id, attempt_id, &outcome)
                .await
            {
                tracing::error!(message = "Could not record a failed attempt.", log_id = %log_id, error = %store_error);
            }
            Err(fail(error))
        }
    }
}
