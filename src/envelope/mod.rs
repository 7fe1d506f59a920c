//! Wire types of the Redox-style envelopes: `Meta`, kick-off requests, `system-export-response`.

mod kickoff;
mod meta;
pub mod reader;
mod response;

pub use kickoff::{
    KickoffEnvelope, NativeParams, RouteTarget, normalise_native, parse_envelope, read_params,
};
pub use meta::{DATA_MODEL, LogRef, Meta, OutboundMeta, Party, now_millis, read_meta};
pub use response::SystemExportResponse;
