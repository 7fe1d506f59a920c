//! The message log: one record per inbound request that reached routing and one per upstream call,
//! metadata only. Records are queued and written in batches by one task per gateway, off the request
//! path, each batch gathered for up to [`LINGER`]; the admin API flushes the queue before it reads, so
//! a person never misses what this replica just did. Records older than `[log] retention_days` are pruned.

use crate::observe::metrics::Metrics;
use crate::store::MessageLogStore;
pub use crate::store::{LogFilter, LogRecord, RecordKind};
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Records queued before new ones are dropped (and counted) rather than slow requests down.
const QUEUE: usize = 65_536;
/// Most records written in one store call.
const BATCH: usize = 512;
/// How long the writer gathers records after the first of a batch before it writes them (unless the
/// batch fills, or a flush is asked for). Every kick-off makes two records a moment apart; written as
/// they came, each was a commit of its own that the next kick-off's reservation could queue behind
/// in the store's writer. Gathered, at 200 kick-offs/s a few commits a second carry all of them, and
/// at saturation the gateway made 8 to 14% more kick-offs (benches/load.sh's harness, 32 connections).
const LINGER: Duration = Duration::from_millis(20);
/// How often old records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

enum Msg {
    Record(Box<LogRecord>),
    Flush(oneshot::Sender<()>),
}

/// The queue into the message log.
#[derive(Debug, Clone)]
pub struct MessageLog {
    tx: mpsc::Sender<Msg>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl MessageLog {
    /// Starts the writer (and pruner) task on the current runtime.
    pub fn start(
        store: Arc<dyn MessageLogStore>,
        metrics: Arc<Metrics>,
        retention_days: u32,
    ) -> (MessageLog, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(writer(store, metrics.clone(), rx, retention_days));
        (MessageLog { tx, metrics }, task)
    }

    /// Queues a record; never waits. A full queue (the store is down or far behind) drops it and
    /// counts the drop in `fhirgate_message_log_records_total{outcome="dropped"}`.
    pub fn record(&self, record: LogRecord) {
        if self.tx.try_send(Msg::Record(Box::new(record))).is_err() {
            self.metrics.log_records("dropped", 1);
        }
    }

    /// Waits until everything queued before this call is written (or failed).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Records deleted per transaction when pruning: a few milliseconds of the store's time (with 5,000,
/// kick-offs waited up to 218 ms behind a chunk on a 10-million-record log: benches/message_log.sh).
const PRUNE_CHUNK: u32 = 1_000;
/// The pause between chunks, in which kick-offs and the log's own writes commit without one.
const PRUNE_PAUSE: Duration = Duration::from_millis(10);

/// Deletes records older than `retention_days`, [`PRUNE_CHUNK`] at a time (each its own short
/// transaction); how many went.
pub async fn prune_now(store: &dyn MessageLogStore, retention_days: u32) -> u64 {
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(retention_days.max(1)));
    let mut total = 0;
    loop {
        match store.prune_logs(cutoff, PRUNE_CHUNK).await {
            Ok(n) => {
                total += n;
                if n < u64::from(PRUNE_CHUNK) {
                    break;
                }
                // Let the writes queued meanwhile commit without a chunk in their group.
                tokio::time::sleep(PRUNE_PAUSE).await;
            }
            Err(e) => {
                tracing::warn!(message = "Message log pruning failed.", error = %e);
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(message = "Pruned old message log records.", records = total);
    }
    total
}

/// Prunes at start, then every [`PRUNE_EVERY`], beside the writer (never in its way).
async fn pruner(store: Arc<dyn MessageLogStore>, retention_days: u32) {
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        prune.tick().await;
        prune_now(store.as_ref(), retention_days).await;
    }
}

async fn writer(
    store: Arc<dyn MessageLogStore>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Msg>,
    retention_days: u32,
) {
    let pruning = tokio::spawn(pruner(store.clone(), retention_days));
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // Gather what arrives in the next LINGER, unless someone waits for a flush (each message
        // looked at once).
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut seen = 0;
        while batch.len() < BATCH && !batch[seen..].iter().any(|m| matches!(m, Msg::Flush(_))) {
            seen = batch.len();
            let room = BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let mut records = Vec::with_capacity(batch.len());
        let mut waiting = Vec::new();
        for msg in batch.drain(..) {
            match msg {
                Msg::Record(r) => records.push(*r),
                Msg::Flush(done) => waiting.push(done),
            }
        }
        if !records.is_empty() {
            let n = records.len() as u64;
            match store.append_log(records).await {
                Ok(()) => metrics.log_records("written", n),
                Err(e) => {
                    metrics.log_records("dropped", n);
                    tracing::warn!(message = "Message log records could not be written.", records = n, error = %e);
                }
            }
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
    pruning.abort();
}
