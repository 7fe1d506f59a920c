//! Values parsed at the boundary: holding one of these types means it is valid.

mod destination;
mod fhir_id;
mod instant;
mod issue;
mod kickoff;
mod output_format;
pub mod params;
mod resource_type;
mod scope;
pub mod secret;
mod vendor;

pub use destination::{DestinationSlug, EnvironmentFlag};
pub use fhir_id::FhirId;
pub use instant::FhirInstant;
pub use issue::{Issue, IssueCode, ParseError, Severity};
pub use kickoff::{ExportKickoff, ExportKind, ExportLevel, KickoffParams, Param};
pub use output_format::OutputFormat;
pub use resource_type::{R4_RESOURCE_TYPES, ResourceType, ResourceTypes, shorten};
pub use scope::{Permissions, ScopeError, ScopeVersion, Scopes, SystemScope};
pub use vendor::Vendor;
