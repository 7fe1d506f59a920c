//! parse + validate + build the upstream request for the seed 000 envelope (target: under 20 µs).
//! Run: `cargo bench --bench kickoff`.

use criterion::{Criterion, criterion_group, criterion_main};
use fhirgate::cli::validate::offline_registry;
use fhirgate::config::Settings;
use fhirgate::domain::ExportKind;
use fhirgate::envelope::{RouteTarget, parse_envelope};
use std::hint::black_box;
use uuid::Uuid;

const SEED: &str = include_str!("../fixtures/envelopes/group-export/valid/seed-000-example.json");

fn kickoff(c: &mut Criterion) {
    let settings = Settings::from_toml(
        r#"
[[destinations]]
slug = "ehr"
name = "EHR"
vendor = "bulk-data"
[destinations.environments.Production]
base_url = "https://ehr.example/fhir/r4"
"#,
    )
    .expect("bench config");
    let registry = offline_registry(&settings).expect("registry");
    let connector = registry.get("ehr", "Production").expect("connector");
    let target = RouteTarget {
        kind: ExportKind::Group,
        path_group_id: Some("example-group-id"),
    };
    c.bench_function(
        "seed envelope: parse + validate + build upstream request",
        |b| {
            b.iter(|| {
                let value: serde_json::Value = serde_json::from_str(black_box(SEED)).expect("json");
                let envelope = parse_envelope(&value, target).expect("valid");
                let log_id = envelope.meta.log_id().unwrap_or_else(Uuid::nil);
                let plan = connector.plan(envelope.kickoff, &[], false).expect("plan");
                let request = connector.kickoff_request(&plan, log_id);
                black_box(request.fingerprint("ehr/Production"))
            })
        },
    );
}

criterion_group!(benches, kickoff);
criterion_main!(benches);
