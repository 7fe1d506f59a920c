//! `oracle-health` (seeds 002/003): Group export only, three parameters, a fixed list of resource types,
//! and rules joining `_type` and `includeAssociatedData`.

use super::Profile;
use crate::connectors::capabilities::Capabilities;
use crate::domain::{ExportKind, Issue, IssueCode, KickoffParams, OutputFormat, Param};

/// The profile: seed 003's table, its rules joining parameters, and its documented 600 s wait after a
/// 429, honoured whatever `[jobs] max_retry_after_secs` says.
pub const PROFILE: Profile = Profile {
    capabilities,
    check,
    min_retry_after_cap_secs: 600,
};

/// The `_type` values seed 003 lists.
pub const RESOURCE_TYPES: &[&str] = &[
    "AllergyIntolerance",
    "CarePlan",
    "CareTeam",
    "Condition",
    "Device",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "Goal",
    "Immunization",
    "Location",
    "MedicationRequest",
    "Patient",
    "Procedure",
    "Observation",
    "Organization",
    "Practitioner",
    "Provenance",
];

/// Types that may only be exported beside a clinical type.
const NEEDS_CLINICAL: &[&str] = &["Location", "Organization", "Practitioner", "Provenance"];

pub fn capabilities() -> Capabilities {
    Capabilities {
        kinds: vec![ExportKind::Group],
        parameters: vec![
            Param::Type,
            Param::OutputFormat,
            Param::IncludeAssociatedData,
        ],
        output_formats: OutputFormat::ALL.to_vec(),
        resource_types: Some(RESOURCE_TYPES.iter().map(|t| (*t).to_owned()).collect()),
        custom_associated_data: false,
        lenient: true,
        patient_by_post: false,
        request_id_header: "opc-request-id",
    }
}

/// Seed 003's rules that join parameters; checked after unsupported parameters were refused or dropped.
pub fn check(params: &KickoffParams, issues: &mut Vec<Issue>) {
    let Some(types) = &params.types else {
        return;
    };
    let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
    let has_clinical = names.iter().any(|t| !NEEDS_CLINICAL.contains(t));
    if !has_clinical {
        issues.push(Issue::at(
            IssueCode::NotSupported,
            "_type",
            format!(
                "Oracle Health exports {} only beside a clinical type such as Patient, Condition or Observation",
                names.join(", ")
            ),
        ));
    }
    if params.include_associated_data.is_some() && !types.contains("Provenance") {
        issues.push(Issue::at(
            IssueCode::NotSupported,
            "includeAssociatedData",
            "Oracle Health needs Provenance in _type when includeAssociatedData and _type are both given",
        ));
    }
}
