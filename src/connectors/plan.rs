//! Fitting a validated kick-off to one destination: refuse what it does not support, or drop it when the
//! partner asked for lenient handling.

use super::capabilities::Capabilities;
use crate::domain::Vendor;
use crate::domain::{ExportKickoff, Issue, IssueCode, Param};

/// A kick-off ready to go to one destination.
#[derive(Debug, Clone)]
pub struct KickoffPlan {
    pub kickoff: ExportKickoff,
    /// Parameters dropped under `Prefer: handling=lenient`, by wire name.
    pub dropped: Vec<String>,
    /// Whether the partner asked for lenient handling.
    pub lenient: bool,
}

/// Checks `kickoff` against the destination's capabilities and vendor rules.
///
/// `unknown` holds parameter names the gateway itself does not know (FHIR-native requests only).
pub fn plan_kickoff(
    destination: &str,
    vendor: Vendor,
    caps: &Capabilities,
    mut kickoff: ExportKickoff,
    unknown: &[String],
    lenient: bool,
) -> Result<KickoffPlan, Vec<Issue>> {
    let mut issues = Vec::new();
    let mut dropped = Vec::new();
    let kind = kickoff.level.kind();
    if !caps.supports_kind(kind) {
        issues.push(Issue::general(
            IssueCode::NotSupported,
            format!(
                "Destination '{destination}' ({}) does not support {}",
                vendor.as_str(),
                kind.event_type()
            ),
        ));
    }
    for name in unknown {
        if lenient {
            dropped.push(name.clone());
        } else {
            issues.push(Issue::at(
                IssueCode::NotSupported,
                name.clone(),
                "is not a Bulk Data kick-off parameter; send Prefer: handling=lenient to have it ignored",
            ));
        }
    }
    for param in kickoff.params.present() {
        if caps.supports(param) {
            continue;
        }
        if lenient {
            kickoff.params.remove(param);
            dropped.push(param.as_str().to_owned());
        } else {
            issues.push(Issue::at(
                IssueCode::NotSupported,
                param.as_str(),
                format!(
                    "is not supported by destination '{destination}' ({}); send Prefer: handling=lenient to have it dropped",
                    vendor.as_str()
                ),
            ));
        }
    }
    let p = &kickoff.params;
    if let Some(f) = p.output_format
        && !caps.output_formats.contains(&f)
    {
        issues.push(Issue::at(
            IssueCode::NotSupported,
            Param::OutputFormat.as_str(),
            format!(
                "'{}' is not an output format destination '{destination}' accepts",
                f.as_str()
            ),
        ));
    }
    if let Some(types) = &p.types {
        let refused: Vec<&str> = types
            .iter()
            .map(|t| t.as_str())
            .filter(|t| !caps.supports_type(t))
            .collect();
        if !refused.is_empty() {
            issues.push(Issue::at(
                IssueCode::NotSupported,
                Param::Type.as_str(),
                format!(
                    "Destination '{destination}' ({}) cannot export {}",
                    vendor.as_str(),
                    refused.join(", ")
                ),
            ));
        }
    }
    if let Some(values) = &p.include_associated_data
        && !caps.custom_associated_data
        && values.iter().any(|v| v.is_custom())
    {
        issues.push(Issue::at(
                IssueCode::NotSupported,
                Param::IncludeAssociatedData.as_str(),
                format!(
                    "Destination '{destination}' accepts only LatestProvenanceResources and RelevantProvenanceResources"
                ),
            ));
    }
    if issues.is_empty() {
        (super::vendors::profile(vendor).check)(&kickoff.params, &mut issues);
    }
    if issues.is_empty() {
        Ok(KickoffPlan {
            kickoff,
            dropped,
            lenient,
        })
    } else {
        Err(issues)
    }
}
