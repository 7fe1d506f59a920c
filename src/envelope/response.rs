//! The `system-export-response` envelope the gateway answers a kick-off with.

use super::meta::{Meta, OutboundMeta};
use serde::Serialize;
use uuid::Uuid;

/// Seed 004: Meta, the HTTP status of the export response, and where to poll.
#[derive(Debug, Clone, Serialize)]
pub struct SystemExportResponse {
    #[serde(rename = "Meta")]
    pub meta: OutboundMeta,
    /// The HTTP status of the export response, as a number (seed 004's example).
    pub status: u16,
    /// The gateway's own status URL; never the upstream's.
    #[serde(rename = "contentLocation")]
    pub content_location: String,
    /// Parameters the destination does not support, dropped under `Prefer: handling=lenient`.
    #[serde(rename = "droppedParameters", skip_serializing_if = "Vec::is_empty")]
    pub dropped_parameters: Vec<String>,
    /// Set when the source's scopes do not cover every resource type and the kick-off named no `_type`:
    /// the types the export was narrowed to or, where the destination takes no `_type`, the only types
    /// whose files the source may download.
    #[serde(rename = "scopedType", skip_serializing_if = "Option::is_none")]
    pub scoped_type: Option<String>,
}

impl SystemExportResponse {
    pub fn accepted(
        request: &Meta,
        log_id: Uuid,
        attempt_id: Uuid,
        content_location: String,
        dropped_parameters: Vec<String>,
        scoped_type: Option<String>,
    ) -> Self {
        SystemExportResponse {
            meta: OutboundMeta::reply(request, "system-export-response", log_id, attempt_id),
            status: 202,
            content_location,
            dropped_parameters,
            scoped_type,
        }
    }
}
