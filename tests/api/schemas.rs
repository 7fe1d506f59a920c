//! The JSON Schemas in schemas/ and the gateway's typed validation agree on every fixture.

use crate::helpers::repo;
use fhirgate::domain::{ExportKind, R4_RESOURCE_TYPES};
use fhirgate::envelope::{RouteTarget, parse_envelope};
use serde_json::{Value, json};
use std::path::PathBuf;

/// Fixtures whose rule joins a field to the route or to another field: JSON Schema cannot express
/// them, so the schema accepts them and only the gateway refuses them.
const SCHEMA_CANNOT_SEE: &[(&str, &str)] = &[
    ("group-export", "id-differs-from-path"),
    ("group-export", "until-before-since"),
    ("group-export", "type-filter-type-not-in-type"),
];

pub fn schema(name: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("schemas").join(name)).expect("schema exists");
    serde_json::from_str(&text).expect("schema is JSON")
}

/// Runs `f` with a compiled validator for `name`; `meta.schema.json` is registered locally, and
/// nothing is ever fetched.
pub fn with_validator<R>(name: &str, f: impl FnOnce(&jsonschema::Validator) -> R) -> R {
    let meta = schema("meta.schema.json");
    let registry = jsonschema::Registry::new()
        .add("https://fhirgate.dev/schemas/meta.schema.json", &meta)
        .expect("meta schema registers")
        .prepare()
        .expect("registry prepares");
    let validator = jsonschema::options()
        .with_registry(&registry)
        .build(&schema(name))
        .expect("schema compiles");
    f(&validator)
}

/// Every fixture file of an event, as (kind, name, path).
pub fn fixture_files(event: &str) -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    for kind in ["valid", "invalid"] {
        let dir = repo().join("fixtures/envelopes").join(event).join(kind);
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|_| panic!("{} exists", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            out.push((kind.to_owned(), name, p));
        }
    }
    out
}

pub const EVENTS: [&str; 3] = ["group-export", "patient-export", "system-export"];

fn typed_accepts(event: &str, fixture_kind: &str, value: &Value) -> bool {
    let kind = ExportKind::from_event_type(event).unwrap();
    // Valid fixtures are routed to the group they name; invalid ones to example-group-id.
    let group = match (fixture_kind, value["id"].as_str()) {
        ("valid", Some(id)) => id,
        _ => "example-group-id",
    };
    let target = RouteTarget {
        kind,
        path_group_id: (kind == ExportKind::Group).then_some(group),
    };
    parse_envelope(value, target).is_ok()
}

#[test]
fn every_fixture_is_judged_alike_by_its_schema_and_by_the_gateway() {
    let mut checked = 0;
    for event in EVENTS {
        with_validator(&format!("{event}.schema.json"), |validator| {
            for (kind, name, path) in fixture_files(event) {
                let value: Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                let by_schema = validator.is_valid(&value);
                let by_gateway = typed_accepts(event, &kind, &value);
                let context_only = SCHEMA_CANNOT_SEE.contains(&(event, name.as_str()));
                match (kind.as_str(), context_only) {
                    ("valid", _) => assert!(
                        by_schema && by_gateway,
                        "{event}/valid/{name}: schema {by_schema}, gateway {by_gateway}"
                    ),
                    (_, true) => assert!(
                        by_schema && !by_gateway,
                        "{event}/invalid/{name} is listed as beyond JSON Schema: schema {by_schema}, gateway {by_gateway}"
                    ),
                    _ => assert!(
                        !by_schema && !by_gateway,
                        "{event}/invalid/{name}: schema {by_schema}, gateway {by_gateway}"
                    ),
                }
                checked += 1;
            }
        });
    }
    assert!(checked >= 50, "only {checked} fixtures found");
}

#[test]
fn the_type_pattern_of_the_schema_knows_every_r4_resource_type() {
    with_validator("group-export.schema.json", |validator| {
        for t in R4_RESOURCE_TYPES {
            let envelope = json!({
                "Meta": {"DataModel": "FHIR Bulk Data Access", "EventType": "group-export"},
                "id": "g", "_type": t, "organizeOutputBy": t
            });
            assert!(validator.is_valid(&envelope), "{t}");
        }
    });
}

#[test]
fn the_seed_004_example_is_a_valid_system_export_response() {
    let example = json!({
        "Meta": {
            "DataModel": "FHIR Bulk Data Access", "EventType": "system-export-response",
            "EventDateTime": "2026-05-28T22:44:52.399Z", "Test": true,
            "Source": {"ID": "7ce6f387-c33c-417d-8682-81e83628cbd9", "Name": "Redox Dev Tools"},
            "Destinations": [{"ID": "af394f14-b34a-464f-8d24-895f370af4c9", "Name": "Redox EMR"}],
            "Logs": [{"ID": "d9f5d293-7110-461e-a875-3beb089e79f3", "AttemptID": "925d1617-2fe0-468c-a14c-f8c04b572c54"}],
            "FacilityCode": null
        },
        "status": 202,
        "contentLocation": "https://api.redoxengine.com/fhir/R4/example-destination/Development/export-status/e4b4a01a-1c2d-4f5e-9a8b-3c7d6e5f4a3b"
    });
    with_validator("system-export-response.schema.json", |v| {
        assert!(v.is_valid(&example))
    });
}
