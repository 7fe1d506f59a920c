//! `bulk-data`: a server that follows the Bulk Data Access IG v2; every other profile differs from this.

use super::capabilities::Capabilities;
use crate::domain::{ExportKind, OutputFormat, Param};

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
