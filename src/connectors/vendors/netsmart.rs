//! `netsmart` (seed 001): Group export with `_outputFormat`, `_since` and `_type`; status at
//! `$export-poll-status?_id=`, files at `Binary/{id}/$binary-access-read` (both reached through the URLs
//! the server hands out, so no code differs for them here).

use super::Profile;
use crate::connectors::capabilities::Capabilities;
use crate::domain::{ExportKind, OutputFormat, Param};

/// The profile: seed 001's table, no rules beyond it.
pub const PROFILE: Profile = Profile {
    capabilities,
    check: super::no_rules,
    min_retry_after_cap_secs: 0,
};

/// Seed 001's table.
pub fn capabilities() -> Capabilities {
    Capabilities {
        kinds: vec![ExportKind::Group],
        parameters: vec![Param::OutputFormat, Param::Since, Param::Type],
        output_formats: OutputFormat::ALL.to_vec(),
        resource_types: None,
        custom_associated_data: false,
        // Seed 001 does not document `Prefer: handling=lenient`.
        lenient: false,
        patient_by_post: false,
        request_id_header: "x-request-id",
    }
}
