//! The few FHIR R4 structures the gateway reads and writes, by hand.

pub mod attachments;
pub mod manifest;
mod operation_outcome;
pub mod parameters;

pub use operation_outcome::{OperationOutcome, OutcomeIssue};
