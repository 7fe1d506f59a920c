//! fhirgate's integration tests: the real server on port 0 against wiremock upstreams.

mod canary;
mod capability;
mod cli;
mod conformance;
mod crash;
mod files;
mod fixtures;
mod helpers;
mod idempotency;
mod kickoff_envelope;
mod kickoff_native;
mod lenient_and_vendor_rules;
mod lifecycle;
mod observability;
mod openapi;
mod poller;
mod robustness;
mod sandbox;
mod schemas;
mod security;
mod semantics;
mod shutdown;
mod smart;
mod source_tokens;
mod upstream_failures;
mod upstream_requests;
