//! Which vendor profile a destination speaks (`vendor = "…"` in its configuration). The profiles
//! themselves are in `connectors::vendors`.

use serde::Deserialize;

/// The vendor profile a destination speaks.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Vendor {
    /// A spec-conformant Bulk Data v2 server.
    BulkData,
    /// Oracle Health (Cerner/Millennium), seeds 002/003.
    OracleHealth,
    /// Netsmart, seed 001.
    Netsmart,
    /// The simulated EHR built into fhirgate (`/sandbox/r4`).
    Sandbox,
}

impl Vendor {
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::BulkData => "bulk-data",
            Vendor::OracleHealth => "oracle-health",
            Vendor::Netsmart => "netsmart",
            Vendor::Sandbox => "sandbox",
        }
    }
}
