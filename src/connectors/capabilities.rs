//! What a destination accepts, as data: the vendor profile's table, narrowed or widened by config.

use crate::domain::{ExportKind, OutputFormat, Param};
use serde::Serialize;

/// One destination's capability table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// The `$export` levels the upstream serves.
    pub kinds: Vec<ExportKind>,
    /// The kick-off parameters it accepts.
    pub parameters: Vec<Param>,
    /// The `_outputFormat` values it accepts.
    pub output_formats: Vec<OutputFormat>,
    /// The resource types `_type` may name; `None` means any R4 type.
    pub resource_types: Option<Vec<String>>,
    /// Whether `includeAssociatedData` may carry server-defined `_` values.
    pub custom_associated_data: bool,
    /// Whether the upstream understands `Prefer: handling=lenient`.
    pub lenient: bool,
    /// Whether `patient` goes upstream as a POST with a `Parameters` body (the IG's only way).
    pub patient_by_post: bool,
    /// The response header that carries the EHR's own id for a request, which its support asks for
    /// (Oracle Health's `opc-request-id`); recorded with each upstream call in the message log.
    pub request_id_header: &'static str,
}

impl Capabilities {
    pub fn supports(&self, param: Param) -> bool {
        self.parameters.contains(&param)
    }

    pub fn supports_kind(&self, kind: ExportKind) -> bool {
        self.kinds.contains(&kind)
    }

    pub fn supports_type(&self, name: &str) -> bool {
        self.resource_types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == name))
    }
}
