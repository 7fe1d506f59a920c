//! `bulk-data`: a server that follows the Bulk Data Access IG v2; every other profile differs from this.

use super::Profile;
use crate::connectors::capabilities::Capabilities;
use crate::domain::{ExportKind, OutputFormat, Param};

/// The profile: the IG's table, no rules beyond it.
pub const PROFILE: Profile = Profile {
    capabilities,
    check: super::no_rules,
    min_retry_after_cap_secs: 0,
};

/// The IG's full table: every level, every parameter, lenient handling, `patient` by POST.
pub fn capabilities() -> Capabilities {
    Capabilities {
        kinds: vec![ExportKind::Group, ExportKind::Patient, ExportKind::System],
        parameters: Param::ALL.to_vec(),
        output_formats: OutputFormat::ALL.to_vec(),
        resource_types: None,
        custom_associated_data: true,
        lenient: true,
        patient_by_post: true,
        request_id_header: "x-request-id",
    }
}
