//! Observability: the message log, metrics, and the per-request context that feeds both (and the
//! request's tracing span).

pub mod context;
pub mod metrics;
pub mod msglog;
pub mod telemetry;
