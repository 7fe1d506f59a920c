//! Deterministic synthetic patients and their Encounters, Observations and Conditions.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};

/// The resource types the sandbox serves.
pub const TYPES: [&str; 4] = ["Patient", "Encounter", "Observation", "Condition"];

/// The groups the sandbox knows, with their member count.
pub const GROUPS: [(&str, usize); 3] =
    [("demo-group", 10), ("small-group", 3), ("big-group", 1000)];

/// Patients a Patient- or system-level export covers.
pub const ALL_PATIENTS: usize = 25;

const FAMILY: [&str; 8] = [
    "Rivera", "Okafor", "Nguyen", "Schmidt", "Haddad", "Kowalski", "Tanaka", "Moreau",
];
const GIVEN: [&str; 8] = [
    "Ada", "Ben", "Chidi", "Dana", "Elif", "Farid", "Grace", "Hiro",
];

/// When patient `i`'s record last changed: spread over 2023–2025, the same on every run.
pub fn last_updated(i: usize, k: usize) -> DateTime<Utc> {
    let base = Utc
        .with_ymd_and_hms(2023, 1, 1, 8, 0, 0)
        .single()
        .unwrap_or_default();
    base + Duration::days(((i * 7919) % 1000) as i64 + k as i64)
        + Duration::minutes((i * 37 % 600) as i64)
}

fn meta(i: usize, k: usize) -> Value {
    json!({"lastUpdated": last_updated(i, k).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)})
}

/// Every resource of `rtype` for patient `i`, with its lastUpdated.
pub fn resources(rtype: &str, i: usize) -> Vec<(DateTime<Utc>, Value)> {
    let subject = json!({"reference": format!("Patient/sbx-pat-{i}")});
    match rtype {
        "Patient" => vec![(
            last_updated(i, 0),
            json!({
                "resourceType": "Patient", "id": format!("sbx-pat-{i}"), "meta": meta(i, 0),
                "name": [{"family": FAMILY[i % FAMILY.len()], "given": [GIVEN[(i / 8) % GIVEN.len()]]}],
                "gender": if i.is_multiple_of(2) { "female" } else { "male" },
                "birthDate": format!("{}-{:02}-{:02}", 1940 + (i * 13) % 70, 1 + i % 12, 1 + i % 28)
            }),
        )],
        "Encounter" => (0..2)
            .map(|k| {
                (
                    last_updated(i, k + 1),
                    json!({
                        "resourceType": "Encounter", "id": format!("sbx-enc-{i}-{k}"), "meta": meta(i, k + 1),
                        "status": "finished",
                        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                        "subject": subject
                    }),
                )
            })
            .collect(),
        "Observation" => [("8867-4", "Heart rate", 60 + i % 40, "/min"), ("29463-7", "Body weight", 50 + i % 50, "kg"), ("8310-5", "Body temperature", 36, "Cel")]
            .iter()
            .enumerate()
            .map(|(k, (code, display, value, unit))| {
                (
                    last_updated(i, k + 3),
                    json!({
                        "resourceType": "Observation", "id": format!("sbx-obs-{i}-{k}"), "meta": meta(i, k + 3),
                        "status": "final",
                        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
                        "subject": subject,
                        "valueQuantity": {"value": value, "unit": unit}
                    }),
                )
            })
            .collect(),
        "Condition" => vec![(
            last_updated(i, 6),
            json!({
                "resourceType": "Condition", "id": format!("sbx-cond-{i}"), "meta": meta(i, 6),
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertension"}]},
                "subject": subject
            }),
        )],
        _ => Vec::new(),
    }
}

/// The NDJSON of one type for these patients, changed after `since` when given.
pub fn ndjson(rtype: &str, patients: &[usize], since: Option<DateTime<Utc>>) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut count = 0;
    for &i in patients {
        for (updated, resource) in resources(rtype, i) {
            if since.is_some_and(|s| updated <= s) {
                continue;
            }
            out.extend_from_slice(resource.to_string().as_bytes());
            out.push(b'\n');
            count += 1;
        }
    }
    (out, count)
}
