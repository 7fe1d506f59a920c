//! Vendor profiles, one file each: the capability table a destination of that vendor starts from, and the
//! few hooks where a vendor really behaves differently. Adding a vendor: a variant in `domain::Vendor`,
//! a file here with its `PROFILE`, and one arm in [`profile`].

pub mod bulk_data;
pub mod netsmart;
pub mod oracle_health;

use crate::connectors::capabilities::Capabilities;
use crate::domain::{Issue, KickoffParams, Vendor};

/// What a vendor profile is.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// The capability table (levels, parameters, output formats, resource types, …).
    pub capabilities: fn() -> Capabilities,
    /// Rules joining parameters, checked once unsupported ones were refused or dropped.
    pub check: fn(&KickoffParams, &mut Vec<Issue>),
    /// A `Retry-After` up to this many seconds is honoured whatever `[jobs] max_retry_after_secs` says.
    pub min_retry_after_cap_secs: u64,
}

/// For profiles whose parameters are independent of each other.
pub fn no_rules(_: &KickoffParams, _: &mut Vec<Issue>) {}

/// The profile of `vendor`.
pub fn profile(vendor: Vendor) -> Profile {
    match vendor {
        Vendor::BulkData => bulk_data::PROFILE,
        Vendor::OracleHealth => oracle_health::PROFILE,
        Vendor::Netsmart => netsmart::PROFILE,
        // The sandbox is a Bulk Data server; what differs (redirects, 429s) is on its side of the wire.
        Vendor::Sandbox => bulk_data::PROFILE,
    }
}
