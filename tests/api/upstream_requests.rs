//! The upstream request each valid fixture becomes, per vendor profile (Authorization is never part of it).

use crate::helpers::test_config;
use crate::schemas::{EVENTS, fixture_files};
use fhirgate::cli::validate::{Verdict, offline_registry, validate_text};
use fhirgate::config::Settings;
use serde_json::{Map, Value};

/// Patient references are identifiers: snapshots keep their shape, not their ids.
pub fn redact_patients(v: Value) -> Value {
    match v {
        Value::String(s) if s.starts_with("Patient/") => Value::String("Patient/[redacted]".into()),
        Value::Array(a) => Value::Array(a.into_iter().map(redact_patients).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k, redact_patients(v)))
                .collect(),
        ),
        other => other,
    }
}

#[test]
fn every_valid_fixture_becomes_the_request_each_vendor_accepts_or_a_clear_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::from_toml(&test_config("https://ehr.example", dir.path())).unwrap();
    let registry = offline_registry(&settings).unwrap();
    for (slug, env) in [
        ("spec-ehr", "Development"),
        ("oracle", "Production"),
        ("netsmart", "Staging"),
    ] {
        let mut by_fixture = Map::new();
        for event in EVENTS {
            for (kind, name, path) in fixture_files(event) {
                if kind != "valid" {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let verdict =
                    match validate_text(&registry, &settings, &text, Some(slug), Some(env)) {
                        Verdict::Valid(req) => {
                            assert!(
                                req.headers
                                    .iter()
                                    .all(|(h, _)| !h.eq_ignore_ascii_case("authorization")),
                                "no credential in a built request"
                            );
                            serde_json::to_value(req).unwrap()
                        }
                        Verdict::Invalid(outcome) => serde_json::to_value(outcome).unwrap(),
                    };
                by_fixture.insert(format!("{event}/{name}"), verdict);
            }
        }
        insta::assert_json_snapshot!(
            format!("upstream_requests__{slug}"),
            redact_patients(Value::Object(by_fixture))
        );
    }
}
