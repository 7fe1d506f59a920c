//! The CapabilityStatement a destination publishes at `…/metadata`, from its capability table.

use crate::connectors::Connector;
use crate::domain::ExportKind;
use serde_json::{Value, json};

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

/// A CapabilityStatement for one destination and environment, as served by the gateway at `base`.
pub fn capability_statement(connector: &Connector, base: &str, date: &str) -> Value {
    let caps = &connector.capabilities;
    let mut resources = Vec::new();
    for (kind, rtype) in [
        (ExportKind::Group, "Group"),
        (ExportKind::Patient, "Patient"),
    ] {
        if caps.supports_kind(kind) {
            resources.push(json!({"type": rtype, "operation": [operation(kind)]}));
        }
    }
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
