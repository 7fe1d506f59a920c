//! `netsmart` (seed 001): Group export with `_outputFormat`, `_since` and `_type`; status at
//! `$export-poll-status?_id=`, files at `Binary/{id}/$binary-access-read` (both reached through the URLs
//! the server hands out, so no code differs for them here).

use super::capabilities::Capabilities;
use crate::domain::{ExportKind, OutputFormat, Param};

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
