//! `…/Group/{groupId}/$export`, `…/Patient/$export`, `…/$export`: envelope or FHIR-native kick-off.

use super::{read_body, require_json_accept};
use crate::api::error::FHIR_JSON;
use crate::auth::Caller;
use crate::domain::ExportKind;
use crate::domain::{Issue, IssueCode};
use crate::envelope::SystemExportResponse;
use crate::error::{Failure, GatewayError};
use crate::fhir::OperationOutcome;
use crate::fhir::parameters::read_parameters;
use crate::service::kickoff::{Accepted, KickoffForm, KickoffRequest, ScopedTypes, kick_off};
use crate::state::AppState;
use actix_web::http::header::{CONTENT_LOCATION, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

pub async fn group_export(
    caller: Caller,
    req: HttpRequest,
    path: web::Path<super::GroupPath>,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Failure> {
    let p = path.into_inner();
    let target = (p.slug, p.env, Some(p.group_id));
    handle(caller, req, target, body, state, ExportKind::Group).await
}

pub async fn patient_export(
    caller: Caller,
    req: HttpRequest,
    path: web::Path<super::DestinationPath>,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Failure> {
    let p = path.into_inner();
    handle(
        caller,
        req,
        (p.slug, p.env, None),
        body,
        state,
        ExportKind::Patient,
    )
    .await
}

pub async fn system_export(
    caller: Caller,
    req: HttpRequest,
    path: web::Path<super::DestinationPath>,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Failure> {
    let p = path.into_inner();
    handle(
        caller,
        req,
        (p.slug, p.env, None),
        body,
        state,
        ExportKind::System,
    )
    .await
}

/// The route's destination, environment and group id.
type Target = (String, String, Option<String>);

async fn handle(
    caller: Caller,
    req: HttpRequest,
    (slug, environment, path_group_id): Target,
    body: web::Payload,
    state: web::Data<AppState>,
    kind: ExportKind,
) -> Result<HttpResponse, Failure> {
    let body = read_body(&req, body, &state.settings.server).await?;
    let form = form_of(&req, &body)?;
    let native = matches!(form, KickoffForm::Native(_));
    if native {
        require_fhir_json_accept(&req)?;
    } else {
        require_json_accept(&req)?;
    }
    let request = KickoffRequest {
        slug,
        environment,
        kind,
        path_group_id,
        form,
        lenient: prefer_tokens(&req).any(|t| t == "handling=lenient"),
        retry_unknown: prefer_tokens(&req).any(|t| t == "retry-unknown-kickoff"),
        caller,
    };
    let accepted = kick_off(&state, request).await?;
    Ok(if native {
        native_accepted(&accepted)
    } else {
        envelope_accepted(&accepted)
    })
}

/// A FHIR-native kick-off answers in `application/fhir+json` only (the Bulk Data IG's `Accept`), so any
/// other `Accept` is refused with 400, as the reference server does; no `Accept` at all is taken as it.
fn require_fhir_json_accept(req: &HttpRequest) -> Result<(), GatewayError> {
    let values: Vec<&str> = req
        .headers()
        .get_all(actix_web::http::header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return Ok(());
    }
    let fhir_json = values.iter().flat_map(|v| v.split(',')).any(|range| {
        range
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(FHIR_JSON))
    });
    if fhir_json {
        Ok(())
    } else {
        Err(GatewayError::Invalid(vec![Issue::at(
            IssueCode::Value,
            "Accept",
            "A FHIR Bulk Data kick-off must send Accept: application/fhir+json.",
        )]))
    }
}

/// The tokens of every `Prefer` header, e.g. `respond-async`, `handling=lenient`.
fn prefer_tokens(req: &HttpRequest) -> impl Iterator<Item = String> + '_ {
    req.headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .map(|t| t.trim().replace(' ', "").to_ascii_lowercase())
}

/// Tells an envelope from a FHIR-native kick-off.
fn form_of(req: &HttpRequest, body: &[u8]) -> Result<KickoffForm, GatewayError> {
    let mut pairs: Vec<(String, Value)> =
        url::form_urlencoded::parse(req.query_string().as_bytes())
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
    let native = |pairs| {
        if prefer_tokens(req).any(|t| t == "respond-async") {
            Ok(KickoffForm::Native(pairs))
        } else {
            Err(GatewayError::Invalid(vec![Issue::at(
                IssueCode::Required,
                "Prefer",
                "A FHIR Bulk Data kick-off needs the header Prefer: respond-async.",
            )]))
        }
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return native(pairs);
    }
    let json_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| t == "application/json" || t == "application/fhir+json");
    if !json_type {
        return Err(GatewayError::UnsupportedMediaType);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::Invalid(vec![Issue::general(
            IssueCode::Structure,
            format!(
                "The body is not valid JSON (line {}, column {}).",
                e.line(),
                e.column()
            ),
        )])
    })?;
    match &value {
        Value::Object(obj)
            if obj.get("resourceType").and_then(Value::as_str) == Some("Parameters") =>
        {
            pairs.extend(read_parameters(obj).map_err(GatewayError::Invalid)?);
            native(pairs)
        }
        _ if !pairs.is_empty() => Err(GatewayError::Invalid(vec![Issue::general(
            IssueCode::Structure,
            "Send the kick-off fields either in the envelope or in the query string, not both.",
        )])),
        _ => Ok(KickoffForm::Envelope(value)),
    }
}

fn envelope_accepted(a: &Accepted) -> HttpResponse {
    let meta = a.meta.clone().unwrap_or_default();
    let body = SystemExportResponse::accepted(
        &meta,
        a.log_id,
        a.attempt_id,
        a.content_location.clone(),
        a.dropped.clone(),
        a.scoped.as_ref().map(|s| match s {
            ScopedTypes::Narrowed(t) | ScopedTypes::FilesFiltered(t) => t.clone(),
        }),
    );
    HttpResponse::Accepted()
        .insert_header((CONTENT_LOCATION, a.content_location.as_str()))
        .insert_header(("X-Request-ID", a.log_id.to_string()))
        .json(body)
}

fn native_accepted(a: &Accepted) -> HttpResponse {
    let mut warnings: Vec<Issue> = a
        .dropped
        .iter()
        .map(|p| {
            Issue::warning(
                IssueCode::NotSupported,
                p.clone(),
                "was dropped: the destination does not support it (Prefer: handling=lenient)",
            )
        })
        .collect();
    match &a.scoped {
        Some(ScopedTypes::Narrowed(types)) => warnings.push(Issue::warning(
            IssueCode::Forbidden,
            "_type",
            format!("was set to {types}: this client's scopes grant only these resource types"),
        )),
        Some(ScopedTypes::FilesFiltered(types)) => warnings.push(Issue::warning(
            IssueCode::Forbidden,
            "_type",
            format!(
                "this client's scopes grant only {types} and the destination cannot narrow an export by _type: files of other types will be refused"
            ),
        )),
        None => {}
    }
    let body = OperationOutcome::accepted(
        "Export request accepted. Poll the Content-Location URL for its status.",
        &warnings,
    );
    HttpResponse::Accepted()
        .insert_header((CONTENT_LOCATION, a.content_location.as_str()))
        .insert_header(("X-Request-ID", a.log_id.to_string()))
        .insert_header((CONTENT_TYPE, FHIR_JSON))
        .json(body)
}
