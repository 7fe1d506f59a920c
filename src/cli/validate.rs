//! `fhirgate validate`: check envelope files offline and show the upstream request each would become.

use crate::config::Settings;
use crate::connectors::http::UpstreamClient;
use crate::connectors::registry::{Registry, Secrets};
use crate::connectors::request::UpstreamRequest;
use crate::domain::{EnvironmentFlag, ExportKind, Issue, IssueCode};
use crate::envelope::{RouteTarget, parse_envelope};
use crate::fhir::OperationOutcome;
use serde_json::Value;
use uuid::Uuid;

/// The verdict on one file.
#[derive(Debug)]
pub enum Verdict {
    /// Valid: the request that would go upstream (no Authorization header).
    Valid(UpstreamRequest),
    /// Invalid: what a partner would be told.
    Invalid(OperationOutcome),
}

/// Builds the registry `validate` routes with: no credentials are read.
pub fn offline_registry(settings: &Settings) -> anyhow::Result<Registry> {
    let http = UpstreamClient::new(
        &settings.upstream,
        std::sync::Arc::new(crate::observe::metrics::Metrics::new()),
    )?;
    Ok(Registry::build(settings, &http, Secrets::Skip)?)
}

/// Validates one envelope's text against `destination`/`environment` (default: the first configured).
pub fn validate_text(
    registry: &Registry,
    settings: &Settings,
    text: &str,
    destination: Option<&str>,
    environment: Option<&str>,
) -> Verdict {
    let invalid = |issues: Vec<Issue>| Verdict::Invalid(OperationOutcome::from_issues(&issues));
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return invalid(vec![Issue::general(
                IssueCode::Structure,
                format!(
                    "The file is not valid JSON (line {}, column {}).",
                    e.line(),
                    e.column()
                ),
            )]);
        }
    };
    let event = value
        .pointer("/Meta/EventType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(kind) = ExportKind::from_event_type(event) else {
        return invalid(vec![Issue::at(
            IssueCode::Value,
            "Meta.EventType",
            "must be group-export, patient-export or system-export",
        )]);
    };
    let group = value
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let target = RouteTarget {
        kind,
        path_group_id: (kind == ExportKind::Group).then_some(group.as_str()),
    };
    let envelope = match parse_envelope(&value, target) {
        Ok(e) => e,
        Err(issues) => return invalid(issues),
    };
    let first = settings.destinations.first();
    let slug = destination
        .map(str::to_owned)
        .or_else(|| first.map(|d| d.slug.as_str().to_owned()));
    let env = environment.map(str::to_owned).or_else(|| {
        first
            .and_then(|d| d.environments.keys().next().copied())
            .map(|e: EnvironmentFlag| e.as_str().to_owned())
    });
    let (Some(slug), Some(env)) = (slug, env) else {
        return invalid(vec![Issue::general(
            IssueCode::NotFound,
            "No destination is configured.",
        )]);
    };
    let Some(connector) = registry.get(&slug, &env) else {
        return invalid(vec![Issue::general(
            IssueCode::NotFound,
            format!("No destination '{slug}' is configured for environment '{env}'."),
        )]);
    };
    match connector.plan(envelope.kickoff, &[], false) {
        Ok(plan) => {
            let log_id = envelope.meta.log_id().unwrap_or_else(Uuid::nil);
            Verdict::Valid(connector.kickoff_request(&plan, log_id))
        }
        Err(issues) => invalid(issues),
    }
}
