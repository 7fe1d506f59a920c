//! `/metrics`: Prometheus text exposition. Every label value comes from a bounded set (route patterns,
//! configured destinations and environments, fixed operation and outcome names), never from ids.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InboundLabels {
    pub route: String,
    pub method: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub destination: String,
    pub environment: String,
    /// kickoff | status | delete | file | token | discovery
    pub operation: String,
    /// ok | rejected | throttled | server-error | timeout | unreachable | bad-answer | refused
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    pub destination: String,
    pub environment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub destination: String,
    pub environment: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncedLabels {
    /// true: the commit waited for the disk; false: message-log records only, synced by the next.
    pub synced: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LogWriteLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PruneLabels {
    /// message_log | jobs
    pub kind: String,
    /// pruned (rows deleted) | failed (prune rounds that stopped on a store error)
    pub outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The gateway's metrics, one set per running gateway (tests run several in one process).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    inbound: Family<InboundLabels, Counter>,
    inbound_latency: HistogramFamily<InboundLabels>,
    upstream: Family<UpstreamLabels, Counter>,
    upstream_latency: HistogramFamily<UpstreamLabels>,
    tokens: Family<TokenLabels, Counter>,
    bytes_streamed: Family<DestinationLabels, Counter>,
    jobs: Family<StateLabels, Gauge>,
    poller_lag: Gauge<f64, AtomicU64>,
    log_records: Family<LogWriteLabels, Counter>,
    kickoff_window: Histogram,
    store_commits: Family<SyncedLabels, Counter>,
    store_writes: Family<SyncedLabels, Counter>,
    pruned: Family<PruneLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fhirgate");
        let inbound = Family::<InboundLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Partner and admin requests handled, by route pattern, method and status",
            inbound.clone(),
        );
        let inbound_latency: HistogramFamily<InboundLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request (headers; streamed bodies continue after)",
            inbound_latency.clone(),
        );
        let upstream = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_requests",
            "Requests to EHRs, by destination, environment, operation and outcome",
            upstream.clone(),
        );
        let upstream_latency: HistogramFamily<UpstreamLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_request_duration_seconds",
            "Time an EHR took to answer",
            upstream_latency.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "upstream_token_fetches",
            "Access tokens fetched from EHR token endpoints (SMART Backend Services), by outcome",
            tokens.clone(),
        );
        let bytes_streamed = Family::<DestinationLabels, Counter>::default();
        registry.register(
            "file_bytes_streamed",
            "Bytes of export files streamed from EHRs to partners",
            bytes_streamed.clone(),
        );
        let jobs = Family::<StateLabels, Gauge>::default();
        registry.register(
            "jobs",
            "Jobs in the store, by state (read from the store at scrape time)",
            jobs.clone(),
        );
        let poller_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "poller_lag_seconds",
            "How far behind its due time the most overdue in-progress job's next poll is",
            poller_lag.clone(),
        );
        let log_records = Family::<LogWriteLabels, Counter>::default();
        registry.register(
            "message_log_records",
            "Message log records written to the store, or dropped when it could not take them",
            log_records.clone(),
        );
        // 0.1 ms .. ~13 s.
        let kickoff_window = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        registry.register(
            "kickoff_unrecorded_window_seconds",
            "Time from an EHR's answer to a kick-off until that answer is durable in the job store: a crash inside it leaves a kickoff-unknown job",
            kickoff_window.clone(),
        );
        let store_commits = Family::<SyncedLabels, Counter>::default();
        registry.register(
            "store_commits",
            "Transactions the store's writer committed (each a group of queued writes), by whether the commit waited for the disk",
            store_commits.clone(),
        );
        let store_writes = Family::<SyncedLabels, Counter>::default();
        registry.register(
            "store_committed_writes",
            "Writes in those transactions: divided by store_commits, the writes sharing one commit",
            store_writes.clone(),
        );
        let pruned = Family::<PruneLabels, Counter>::default();
        registry.register(
            "retention",
            "Retention: rows deleted past their retention (outcome pruned), and prune rounds a store error stopped (outcome failed), by kind (message_log, jobs)",
            pruned.clone(),
        );
        Metrics {
            registry,
            pruned,
            store_commits,
            store_writes,
            inbound,
            inbound_latency,
            upstream,
            upstream_latency,
            tokens,
            bytes_streamed,
            jobs,
            poller_lag,
            log_records,
            kickoff_window,
        }
    }

    pub fn inbound(&self, route: &str, method: &str, status: u16, secs: f64) {
        let labels = InboundLabels {
            route: route.to_owned(),
            method: method.to_owned(),
            status: status.to_string(),
        };
        self.inbound_latency.get_or_create(&labels).observe(secs);
        self.inbound.get_or_create(&labels).inc();
    }

    pub fn upstream(
        &self,
        destination: &str,
        environment: &str,
        operation: &str,
        outcome: &str,
        secs: f64,
    ) {
        let labels = UpstreamLabels {
            destination: destination.to_owned(),
            environment: environment.to_owned(),
            operation: operation.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.upstream_latency.get_or_create(&labels).observe(secs);
        self.upstream.get_or_create(&labels).inc();
    }

    /// One kick-off's window between the EHR's answer and its durable record.
    pub fn kickoff_window(&self, secs: f64) {
        self.kickoff_window.observe(secs);
    }

    pub fn token_fetch(&self, destination: &str, environment: &str, ok: bool) {
        self.tokens
            .get_or_create(&TokenLabels {
                destination: destination.to_owned(),
                environment: environment.to_owned(),
                outcome: if ok { "ok" } else { "failed" }.to_owned(),
            })
            .inc();
    }

    pub fn bytes_streamed(&self, destination: &str, environment: &str, n: u64) {
        self.bytes_streamed
            .get_or_create(&DestinationLabels {
                destination: destination.to_owned(),
                environment: environment.to_owned(),
            })
            .inc_by(n);
    }

    /// `n` rows of `kind` deleted past their retention, or (`outcome` "failed") a prune round that
    /// stopped on a store error.
    pub fn retention(&self, kind: &str, outcome: &str, n: u64) {
        self.pruned
            .get_or_create(&PruneLabels {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc_by(n);
    }

    pub fn log_records(&self, outcome: &str, n: u64) {
        self.log_records
            .get_or_create(&LogWriteLabels {
                outcome: outcome.to_owned(),
            })
            .inc_by(n);
    }

    /// Sets the store-derived gauges: every one of `states`, those the store holds none of at 0.
    pub fn set_job_stats<'a>(
        &self,
        states: impl IntoIterator<Item = &'a str>,
        by_state: &[(String, i64)],
        poller_lag_secs: f64,
    ) {
        for state in states {
            let n = by_state
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n);
            self.jobs
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .set(n);
        }
        self.poller_lag.set(poller_lag_secs.max(0.0));
    }

    /// Sets the store writer's commit counters to what the store counted since it opened.
    pub fn set_commits(&self, counts: crate::store::CommitCounts) {
        use std::sync::atomic::Ordering::Relaxed;
        let label = |synced: bool| SyncedLabels {
            synced: synced.to_string(),
        };
        for (synced, groups, writes) in [
            (true, counts.synced_groups, counts.synced_writes),
            (false, counts.unsynced_groups, counts.unsynced_writes),
        ] {
            self.store_commits
                .get_or_create(&label(synced))
                .inner()
                .store(groups, Relaxed);
            self.store_writes
                .get_or_create(&label(synced))
                .inner()
                .store(writes, Relaxed);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
