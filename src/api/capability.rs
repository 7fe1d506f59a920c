//! `GET /fhir/R4/{slug}/{env}/metadata`: what this destination supports, as a CapabilityStatement.
//! Public, as a FHIR server's is: clients read it to learn how to authenticate. Built from the
//! destination's capability table.

use crate::api::error::{FHIR_JSON, GatewayError};
use crate::auth::auth_required;
use crate::auth::issuer::TokenIssuer;
use crate::connectors::Connector;
use crate::domain::{ExportKind, R4_RESOURCE_TYPES};
use crate::envelope::now_millis;
use crate::state::AppState;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

pub async fn metadata(
    path: web::Path<super::DestinationPath>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let (slug, env) = (path.slug.as_str(), path.env.as_str());
    let connector = state.registry.get(slug, env).ok_or_else(|| {
        GatewayError::NotFound(format!(
            "No destination '{}' is configured for environment '{}'.",
            crate::domain::shorten(slug),
            crate::domain::shorten(env)
        ))
    })?;
    let base = state.fhir_base(connector.slug.as_str(), connector.environment);
    let token_url = auth_required(&state.settings).then(|| TokenIssuer::token_url(&state.settings));
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, FHIR_JSON))
        .json(capability_statement(
            &connector,
            &base,
            &now_millis(),
            token_url.as_deref(),
        )))
}

const EXT: &str = "https://fhirgate.dev/fhir/StructureDefinition";

fn operation(kind: ExportKind) -> Value {
    let (name, definition) = match kind {
        ExportKind::Group => (
            "export",
            "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
        ),
        ExportKind::Patient => (
            "export",
            "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
        ),
        ExportKind::System => (
            "export",
            "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
        ),
    };
    json!({"name": name, "definition": definition})
}

/// `rest.security` for a gateway that wants credentials: SMART's `oauth-uris` extension naming the
/// token endpoint, and the SMART-on-FHIR service coding.
fn security(token_url: &str) -> Value {
    json!({
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [{"url": "token", "valueUri": token_url}],
        }],
        "service": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR",
                "display": "SMART-on-FHIR",
            }],
            "text": "SMART Backend Services (client_credentials with a signed JWT assertion), or an API key as a Bearer token",
        }],
        "description": "Send Authorization: Bearer <access token from the token endpoint, or API key>. Scopes: system/<Type|*>.read (SMART v1) or .rs (SMART v2); only read and search are granted.",
    })
}

/// A CapabilityStatement for one destination and environment, as served by the gateway at `base`;
/// `token_url` is set when the gateway wants credentials.
pub fn capability_statement(
    connector: &Connector,
    base: &str,
    date: &str,
    token_url: Option<&str>,
) -> Value {
    let caps = &connector.capabilities();
    // Every type the destination exports (the EHR's own list when discovered, else the vendor
    // profile's, else R4's), as a Bulk Data server lists them: clients pick `_type` from here.
    let mut types: Vec<&str> = match &caps.resource_types {
        Some(types) => types.iter().map(String::as_str).collect(),
        None => R4_RESOURCE_TYPES.to_vec(),
    };
    for (kind, rtype) in [
        (ExportKind::Group, "Group"),
        (ExportKind::Patient, "Patient"),
    ] {
        if caps.supports_kind(kind) && !types.contains(&rtype) {
            types.push(rtype);
        }
    }
    types.sort_unstable();
    let resources: Vec<Value> = types
        .into_iter()
        .map(|rtype| {
            let kind = match rtype {
                "Group" => Some(ExportKind::Group),
                "Patient" => Some(ExportKind::Patient),
                _ => None,
            };
            match kind.filter(|k| caps.supports_kind(*k)) {
                Some(kind) => json!({"type": rtype, "operation": [operation(kind)]}),
                None => json!({"type": rtype}),
            }
        })
        .collect();
    let mut rest = json!({
        "mode": "server",
        "documentation": format!(
            "Bulk Data export through fhirgate to {} ({}). Supported kick-off parameters: {}.",
            connector.name,
            connector.vendor.as_str(),
            caps.parameters.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
        ),
        "resource": resources,
    });
    if caps.supports_kind(ExportKind::System) {
        rest["operation"] = json!([operation(ExportKind::System)]);
    }
    if let Some(token_url) = token_url {
        rest["security"] = security(token_url);
    }
    let mut extension: Vec<Value> = caps
        .parameters
        .iter()
        .map(|p| json!({"url": format!("{EXT}/supported-parameter"), "valueString": p.as_str()}))
        .collect();
    extension.extend(caps.output_formats.iter().map(
        |f| json!({"url": format!("{EXT}/supported-output-format"), "valueString": f.as_str()}),
    ));
    if let Some(types) = &caps.resource_types {
        extension.extend(
            types
                .iter()
                .map(|t| json!({"url": format!("{EXT}/supported-resource-type"), "valueCode": t})),
        );
    }
    extension.push(json!({"url": format!("{EXT}/lenient-handling"), "valueBoolean": true}));
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "kind": "instance",
        "software": {"name": "fhirgate", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {
            "description": format!("fhirgate: {} ({})", connector.name, connector.environment),
            "url": base,
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/json"],
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
        "extension": extension,
        "rest": [rest],
    })
}
