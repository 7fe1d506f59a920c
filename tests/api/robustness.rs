//! Arbitrary input never panics the gateway and never gets a 5xx.

use crate::helpers::*;
use fhirgate::domain::ExportKind;
use fhirgate::envelope::{RouteTarget, parse_envelope};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const FIELDS: &[&str] = &[
    "id",
    "patient",
    "includeAssociatedData",
    "organizeOutputBy",
    "allowPartialManifests",
    "_outputFormat",
    "_since",
    "_until",
    "_type",
    "_elements",
    "_typeFilter",
];
const META_FIELDS: &[&str] = &[
    "DataModel",
    "EventType",
    "EventDateTime",
    "Test",
    "FacilityCode",
];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[A-Za-z_]{1,12}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// The seed envelope with one field (top level or Meta) replaced by an arbitrary value.
fn seed_with(field: usize, value: Value) -> Value {
    let mut e = seed();
    if field < FIELDS.len() {
        e[FIELDS[field]] = value;
    } else {
        e["Meta"][META_FIELDS[field - FIELDS.len()]] = value;
    }
    e
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsing_arbitrary_json_never_panics(body in arb_json(), group in ".{0,70}") {
        for kind in [ExportKind::Group, ExportKind::Patient, ExportKind::System] {
            let _ = parse_envelope(&body, RouteTarget { kind, path_group_id: Some(&group) });
        }
    }

    #[test]
    fn parsing_arbitrary_strings_in_every_field_never_panics(
        field in 0..(FIELDS.len() + META_FIELDS.len()),
        text in "\\PC{0,60}",
    ) {
        let e = seed_with(field, Value::String(text));
        let _ = parse_envelope(&e, RouteTarget { kind: ExportKind::Group, path_group_id: Some("example-group-id") });
    }
}

#[test]
fn the_running_gateway_answers_arbitrary_envelopes_without_a_5xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(async {
        let app = TestApp::spawn().await;
        app.upstream_accepts_kickoffs().await;
        app
    });
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(300));
    let strategy = (
        0..(FIELDS.len() + META_FIELDS.len()),
        prop_oneof![arb_json(), "\\PC{0,60}".prop_map(Value::String),],
        any::<bool>(),
        arb_json(),
    );
    runner
        .run(&strategy, |(field, value, whole, body)| {
            let envelope = if whole { body } else { seed_with(field, value) };
            let status = rt.block_on(async {
                let response = app.post_envelope(&spec_group_route(), &envelope).await;
                let status = response.status().as_u16();
                let body: Value = response.json().await.expect("every answer is JSON");
                (status, body)
            });
            prop_assert!(status.0 < 500, "{} for {envelope}: {}", status.0, status.1);
            if status.0 >= 400 {
                prop_assert_eq!(&status.1["resourceType"], "OperationOutcome");
            }
            Ok(())
        })
        .unwrap();
}
