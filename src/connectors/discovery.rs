//! Honest capabilities: what the EHR itself declares, read from its `metadata` and the export
//! OperationDefinitions it references, narrows the vendor profile's table (`discover = true`).
//!
//! Read without credentials (a FHIR server's CapabilityStatement and its conformance resources are
//! public), at start and every `discover_interval_secs`. An EHR that cannot be read leaves the profile
//! table standing (or the last discovery that succeeded).

use super::Connector;
use super::capabilities::Capabilities;
use crate::domain::R4_RESOURCE_TYPES;
use crate::domain::{ExportKind, Param};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use url::Url;

/// Parameters the gateway keeps even where the EHR's OperationDefinitions leave them out: hints the
/// IG lets a server ignore, visibly and without losing data (a manifest without `outputOrganizedBy`,
/// or in one piece).
pub const IGNORABLE_HINTS: [Param; 2] = [Param::AllowPartialManifests, Param::OrganizeOutputBy];

/// What one discovery found. `None` means the EHR did not say, and the profile's table stands there.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Discovered {
    pub at: DateTime<Utc>,
    /// Export levels the CapabilityStatement declares.
    pub kinds: Option<Vec<ExportKind>>,
    /// Kick-off parameters the export OperationDefinitions declare (with [`IGNORABLE_HINTS`]).
    pub parameters: Option<Vec<Param>>,
    /// `rest.resource[].type`: the resource types the EHR serves.
    pub resource_types: Option<Vec<String>>,
    /// How many export OperationDefinitions were read.
    pub operation_definitions: usize,
}

/// Where discovery stands for one connector.
#[derive(Debug, Clone, Default)]
pub enum DiscoveryStatus {
    /// `discover = false`.
    #[default]
    Off,
    /// Not tried yet (just booted).
    Pending,
    Found(Arc<Discovered>),
    /// The last attempt failed; `last` is the last discovery that succeeded, still in force.
    Failed {
        at: DateTime<Utc>,
        why: String,
        last: Option<Arc<Discovered>>,
    },
}

impl DiscoveryStatus {
    /// The discovery in force.
    pub fn in_force(&self) -> Option<&Arc<Discovered>> {
        match self {
            DiscoveryStatus::Found(d) => Some(d),
            DiscoveryStatus::Failed { last, .. } => last.as_ref(),
            _ => None,
        }
    }

    /// For `/readyz` and `check-config --online`.
    pub fn report(&self) -> Value {
        let mut out = match self {
            DiscoveryStatus::Off => serde_json::json!({"status": "off"}),
            DiscoveryStatus::Pending => serde_json::json!({"status": "pending"}),
            DiscoveryStatus::Found(_) => serde_json::json!({"status": "ok"}),
            DiscoveryStatus::Failed { at, why, .. } => serde_json::json!({
                "status": "failed", "failedAt": at.to_rfc3339(), "error": why
            }),
        };
        if let Some(d) = self.in_force() {
            out["discovered"] = serde_json::json!({
                "at": d.at.to_rfc3339(),
                "exportLevels": d.kinds,
                "parameters": d.parameters.as_ref().map(|p| p.iter().map(|p| p.as_str()).collect::<Vec<_>>()),
                "resourceTypes": d.resource_types.as_ref().map(Vec::len),
                "operationDefinitions": d.operation_definitions,
            });
        }
        out
    }
}

/// `caps` narrowed to what `found` declares.
pub fn narrow(mut caps: Capabilities, found: &Discovered) -> Capabilities {
    if let Some(kinds) = &found.kinds {
        caps.kinds.retain(|k| kinds.contains(k));
    }
    if let Some(params) = &found.parameters {
        caps.parameters.retain(|p| params.contains(p));
    }
    if let Some(types) = &found.resource_types {
        caps.resource_types = Some(match caps.resource_types {
            Some(mine) => mine.into_iter().filter(|t| types.contains(t)).collect(),
            None => types.clone(),
        });
    }
    caps
}

/// The export level an operation declares, judged by its definition's name, else by where it is
/// listed (`on`: the resource type, or `None` at the system level).
fn export_kind(op: &Value, on: Option<&str>) -> Option<ExportKind> {
    let name = op.get("name").and_then(Value::as_str).unwrap_or_default();
    let definition = op
        .get("definition")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let last = definition
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let is_export = name == "export" || last.ends_with("export");
    if !is_export || last.contains("everything") {
        return None;
    }
    Some(if last.contains("patient") {
        ExportKind::Patient
    } else if last.contains("group") {
        ExportKind::Group
    } else {
        match on {
            Some("Patient") => ExportKind::Patient,
            Some("Group") => ExportKind::Group,
            _ => ExportKind::System,
        }
    })
}

/// What a CapabilityStatement says of exports.
struct Statement {
    kinds: Vec<ExportKind>,
    /// The export operations' definitions.
    definitions: Vec<String>,
    types: Vec<String>,
}

/// Reads a CapabilityStatement: the export levels, the export operations' definitions, the types.
fn read_capability_statement(cs: &Value) -> Result<Statement, String> {
    if cs.get("resourceType").and_then(Value::as_str) != Some("CapabilityStatement") {
        return Err("metadata is not a CapabilityStatement".into());
    }
    let rest = cs
        .get("rest")
        .and_then(Value::as_array)
        .and_then(|r| {
            r.iter()
                .find(|r| r.get("mode").and_then(Value::as_str) == Some("server"))
        })
        .ok_or("the CapabilityStatement has no rest entry in server mode")?;
    let mut kinds = Vec::new();
    let mut definitions = Vec::new();
    let mut note = |op: &Value, on: Option<&str>| {
        if let Some(kind) = export_kind(op, on) {
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
            if let Some(d) = op.get("definition").and_then(Value::as_str)
                && !definitions.iter().any(|x| x == d)
            {
                definitions.push(d.to_owned());
            }
        }
    };
    let ops = |v: &Value| {
        v.get("operation")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for op in ops(rest) {
        note(&op, None);
    }
    let mut types = Vec::new();
    for resource in rest
        .get("resource")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(t) = resource.get("type").and_then(Value::as_str) else {
            continue;
        };
        for op in ops(resource) {
            note(&op, Some(t));
        }
        if R4_RESOURCE_TYPES.contains(&t) && !types.iter().any(|x| x == t) {
            types.push(t.to_owned());
        }
    }
    Ok(Statement {
        kinds,
        definitions,
        types,
    })
}

/// The `in` parameters an OperationDefinition declares.
fn declared_parameters(od: &Value) -> Option<Vec<Param>> {
    if od.get("resourceType").and_then(Value::as_str) != Some("OperationDefinition") {
        return None;
    }
    Some(
        od.get("parameter")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| p.get("use").and_then(Value::as_str) != Some("out"))
            .filter_map(|p| p.get("name").and_then(Value::as_str))
            .filter_map(Param::from_wire)
            .collect(),
    )
}

impl Connector {
    /// Where an OperationDefinition the EHR references can be read: on its origin as given, relative
    /// to its FHIR base, or (a canonical URL elsewhere, such as the IG's) by id under its base.
    fn definition_url(&self, definition: &str) -> Option<Url> {
        let base =
            Url::parse(&(self.base_url.as_str().trim_end_matches('/').to_owned() + "/")).ok()?;
        match Url::parse(definition) {
            Ok(u) if self.same_origin(&u) => Some(u),
            Ok(u) => {
                let id = u.path_segments()?.next_back()?.to_owned();
                base.join(&format!("OperationDefinition/{id}")).ok()
            }
            Err(_) => base.join(definition).ok(),
        }
    }

    async fn get_json(&self, url: Url) -> Result<Value, String> {
        self.http().check_literal(&url).map_err(|e| e.to_string())?;
        let unreachable = |e| format!("the EHR could not be reached: {}", super::http::classify(e));
        let client = self.http().plain();
        let request = client
            .get(url)
            .header("Accept", "application/fhir+json")
            .build()
            .map_err(unreachable)?;
        let response =
            super::http::execute(client, request, super::http::Resend::WhenClosedUnanswered)
                .await
                .map_err(unreachable)?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(format!("the EHR answered HTTP {status}"));
        }
        let body = response
            .bytes()
            .await
            .map_err(|_| "the EHR's answer was cut short".to_owned())?;
        serde_json::from_slice(&body).map_err(|_| "the EHR's answer is not JSON".to_owned())
    }

    /// Reads what the EHR declares. Only the CapabilityStatement must be had; OperationDefinitions
    /// the EHR does not serve leave the parameters as the profile has them.
    pub async fn discover(&self) -> Result<Discovered, String> {
        let metadata = Url::parse(&format!(
            "{}/metadata",
            self.base_url.as_str().trim_end_matches('/')
        ))
        .map_err(|e| e.to_string())?;
        let cs = self
            .get_json(metadata)
            .await
            .map_err(|e| format!("metadata: {e}"))?;
        let Statement {
            kinds,
            definitions,
            types,
        } = read_capability_statement(&cs)?;
        let mut declared: Option<Vec<Param>> = None;
        let mut read = 0;
        for definition in &definitions {
            let Some(url) = self.definition_url(definition) else {
                continue;
            };
            if let Ok(od) = self.get_json(url).await
                && let Some(params) = declared_parameters(&od)
            {
                read += 1;
                let all = declared.get_or_insert_with(|| IGNORABLE_HINTS.to_vec());
                for p in params {
                    if !all.contains(&p) {
                        all.push(p);
                    }
                }
            }
        }
        Ok(Discovered {
            at: Utc::now(),
            kinds: (!kinds.is_empty()).then_some(kinds),
            parameters: declared,
            resource_types: (!types.is_empty()).then_some(types),
            operation_definitions: read,
        })
    }

    /// One discovery round: what it found (or why not) becomes the connector's status.
    pub async fn refresh_discovery(&self) {
        let outcome = self.discover().await;
        let mut status = self
            .discovery
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *status = match outcome {
            Ok(found) => {
                tracing::info!(message = "Capabilities discovered.", destination = %self.slug, environment = %self.environment,
                    levels = ?found.kinds, operation_definitions = found.operation_definitions);
                DiscoveryStatus::Found(Arc::new(found))
            }
            Err(why) => {
                tracing::warn!(message = "Capability discovery failed; the profile table stands.", destination = %self.slug, environment = %self.environment, error = %why);
                DiscoveryStatus::Failed {
                    at: Utc::now(),
                    why,
                    last: status.in_force().cloned(),
                }
            }
        };
    }

    /// Where discovery stands.
    pub fn discovery_status(&self) -> DiscoveryStatus {
        self.discovery
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn export_levels_and_definitions_are_read_from_where_the_statement_lists_them() {
        let cs = json!({"resourceType": "CapabilityStatement", "rest": [{"mode": "server",
        "operation": [
            {"name": "get-resource-counts", "definition": "OperationDefinition/-s-get-resource-counts"},
            {"name": "export", "definition": "https://ehr.example/fhir/OperationDefinition/SystemExport"}
        ],
        "resource": [
            {"type": "Patient", "operation": [{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"},
                                              {"name": "everything", "definition": "OperationDefinition/Patient--everything"}]},
            {"type": "Observation"},
            {"type": "NotAType"}
        ]}]});
        let Statement {
            kinds,
            definitions,
            types,
        } = read_capability_statement(&cs).unwrap();
        assert_eq!(kinds, [ExportKind::System, ExportKind::Patient]);
        assert_eq!(definitions.len(), 2);
        assert_eq!(types, ["Patient", "Observation"]);
    }

    #[test]
    fn narrowing_keeps_only_what_both_the_profile_and_the_ehr_allow() {
        let caps = crate::connectors::vendors::bulk_data::capabilities();
        let found = Discovered {
            at: Utc::now(),
            kinds: Some(vec![ExportKind::Group]),
            parameters: Some(vec![
                Param::Type,
                Param::Since,
                Param::AllowPartialManifests,
            ]),
            resource_types: Some(vec!["Patient".into()]),
            operation_definitions: 1,
        };
        let narrowed = narrow(caps, &found);
        assert_eq!(narrowed.kinds, [ExportKind::Group]);
        assert_eq!(
            narrowed.parameters,
            [Param::Since, Param::Type, Param::AllowPartialManifests]
        );
        assert!(narrowed.supports_type("Patient") && !narrowed.supports_type("Observation"));
    }
}
