//! The use cases, between the HTTP layer and the EHRs: kick-off, the export's status, files and delete,
//! and the background poller with its notifications. Speaks domain errors; the
//! HTTP status of each is known only to `api::error`.

pub mod attachments;
pub mod backoff;
pub mod export;
pub mod kickoff;
pub mod operator;
pub mod poller;
