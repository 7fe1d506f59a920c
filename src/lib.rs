//! fhirgate: a Redox-style gateway in front of EHRs' FHIR Bulk Data APIs. `ARCHITECTURE.md` is the map:
//! `api` → `service` → {`connectors`, `store`, `domain`}; nothing below imports above.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod domain;
pub mod envelope;
pub mod error;
pub mod fhir;
pub mod front;
pub mod observe;
pub mod sandbox;
pub mod service;
pub mod startup;
pub mod state;
pub mod store;
pub mod ui;
