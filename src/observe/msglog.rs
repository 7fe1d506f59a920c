//! The message log: one record per inbound request that reached routing and one per upstream call,
//! metadata only. Records are queued and written in batches by one task per gateway, off the request
//! path, each batch gathered for up to [`LINGER`]; the admin API flushes the queue before it reads, so
//! a person never misses what this replica just did. Records older than `[log] retention_days` are pruned
//! by `service::retention`.

use crate::observe::metrics::Metrics;
use crate::store::MessageLogStore;
pub use crate::store::{LogFilter, LogRecord, RecordKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Records queued before new ones are dropped (and counted) rather than slow requests down.
const QUEUE: usize = 65_536;
/// Most records written in one store call.
const BATCH: usize = 512;
/// How long the writer gathers records after the first of a batch before it writes everything queued
/// (unless a flush is asked for, or the batch was full at once). Every kick-off makes two records a
/// moment apart; written as they came, each was a commit of its own that the next kick-off's
/// reservation could queue behind in the store's writer. Gathered, at 200 kick-offs/s a few commits a
/// second carry all of them. The writer does not watch the queue while it gathers: a task waiting on
/// it is woken by every record, and at saturation that was one wake-up of the gateway's main thread
/// per kick-off (a system call on the request's thread and a context switch; benches/load.sh's
/// harness, 32 connections, perf).
const LINGER: Duration = Duration::from_millis(20);

/// The queue into the message log.
#[derive(Debug, Clone)]
pub struct MessageLog {
    records: mpsc::Sender<LogRecord>,
    flushes: mpsc::Sender<oneshot::Sender<()>>,
    metrics: Arc<Metrics>,
}

impl MessageLog {
    /// Starts the writer task on the current runtime.
    pub fn start(
        store: Arc<dyn MessageLogStore>,
        metrics: Arc<Metrics>,
    ) -> (MessageLog, tokio::task::JoinHandle<()>) {
        let (records, records_rx) = mpsc::channel(QUEUE);
        let (flushes, flushes_rx) = mpsc::channel(64);
        let queues = Queues {
            records: records_rx,
            flushes: flushes_rx,
        };
        let task = tokio::spawn(writer(store, metrics.clone(), queues));
        (
            MessageLog {
                records,
                flushes,
                metrics,
            },
            task,
        )
    }

    /// Queues a record; never waits. A full queue (the store is down or far behind) drops it and
    /// counts the drop in `fhirgate_message_log_records_total{outcome="dropped"}`.
    pub fn record(&self, record: LogRecord) {
        if self.records.try_send(record).is_err() {
            self.metrics.log_records("dropped", 1);
        }
    }

    /// Waits until everything queued before this call is written (or failed).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.flushes.send(done).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// The writer's two queues: records, and flush requests apart from them, so that a flush can end a
/// batch's gathering without the gathering having to watch (and be woken by) every record.
struct Queues {
    records: mpsc::Receiver<LogRecord>,
    flushes: mpsc::Receiver<oneshot::Sender<()>>,
}

/// What ended a wait: records arrived, a flush was asked for, or the gateway is going.
enum Woken {
    Records,
    Flush(oneshot::Sender<()>),
    Closed,
}

async fn writer(store: Arc<dyn MessageLogStore>, metrics: Arc<Metrics>, mut queues: Queues) {
    let mut batch: Vec<LogRecord> = Vec::with_capacity(BATCH);
    let mut waiting = Vec::new();
    loop {
        let woken = tokio::select! {
            biased;
            done = queues.flushes.recv() => done.map_or(Woken::Closed, Woken::Flush),
            n = queues.records.recv_many(&mut batch, BATCH) => {
                if n == 0 { Woken::Closed } else { Woken::Records }
            }
        };
        let closing = match woken {
            // A batch that filled at once is written at once.
            Woken::Records if batch.len() == BATCH => false,
            Woken::Records => {
                // Gather for LINGER without looking at the record queue: a task that waits on it is
                // woken by every record (a system call and a thread wake-up on the sender's side, one
                // per record: at saturation the gateway's main thread woke about once per kick-off
                // for this alone). Only a flush ends the gathering early.
                let linger = tokio::time::sleep(LINGER);
                tokio::select! {
                    biased;
                    done = queues.flushes.recv() => match done {
                        Some(done) => { waiting.push(done); false }
                        None => true,
                    },
                    () = linger => false,
                }
            }
            Woken::Flush(done) => {
                waiting.push(done);
                false
            }
            Woken::Closed => true,
        };
        // Everything queued by now, in batches of at most BATCH records: a flush waits for all of
        // it, and a gathering never leaves records behind for the next.
        loop {
            while batch.len() < BATCH {
                match queues.records.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let full = batch.len() == BATCH;
            write(store.as_ref(), &metrics, &mut batch).await;
            if !full {
                break;
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        if closing {
            break;
        }
    }
}

/// Writes (and empties) `batch` in one store call, counting what was written or dropped.
async fn write(store: &dyn MessageLogStore, metrics: &Metrics, batch: &mut Vec<LogRecord>) {
    if batch.is_empty() {
        return;
    }
    let records = std::mem::replace(batch, Vec::with_capacity(BATCH));
    let n = records.len() as u64;
    match store.append_log(records).await {
        Ok(()) => metrics.log_records("written", n),
        Err(e) => {
            metrics.log_records("dropped", n);
            tracing::warn!(message = "Message log records could not be written.", records = n, error = %e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LogFilter, StoreError};
    use chrono::{DateTime, Utc};
    use std::sync::Mutex;

    /// A message-log store that keeps the size of every batch it was handed.
    #[derive(Debug, Default)]
    struct Batches(Mutex<Vec<usize>>);

    impl Batches {
        fn sizes(&self) -> Vec<usize> {
            self.0.lock().unwrap().clone()
        }
    }

    #[async_trait::async_trait]
    impl MessageLogStore for Batches {
        async fn append_log(&self, records: Vec<LogRecord>) -> Result<(), StoreError> {
            self.0.lock().unwrap().push(records.len());
            Ok(())
        }
        async fn query_logs(
            &self,
            _: &LogFilter,
            _: u32,
            _: u64,
        ) -> Result<Vec<LogRecord>, StoreError> {
            Ok(Vec::new())
        }
        async fn count_logs(
            &self,
            _: &LogFilter,
            _: u64,
            _: Duration,
        ) -> Result<Option<u64>, StoreError> {
            Ok(Some(0))
        }
        async fn prune_logs(&self, _: DateTime<Utc>, _: u32) -> Result<u64, StoreError> {
            Ok(0)
        }
    }

    fn record() -> LogRecord {
        LogRecord {
            kind: RecordKind::Request,
            log_id: uuid::Uuid::now_v7(),
            attempt_id: uuid::Uuid::now_v7(),
            time: Utc::now(),
            source: None,
            destination: None,
            environment: None,
            event_type: None,
            method: Some("POST".into()),
            route: "/fhir/R4/{destinationSlug}/{environmentFlag}/$export".into(),
            gateway_status: Some(202),
            upstream_status: None,
            error_code: None,
            duration_ms: 1.0,
            job_id: None,
            upstream_request_id: None,
            seq: 0,
        }
    }

    fn started() -> (MessageLog, Arc<Batches>) {
        let store = Arc::new(Batches::default());
        let (log, _task) = MessageLog::start(store.clone(), Arc::new(Metrics::new()));
        (log, store)
    }

    #[tokio::test(start_paused = true)]
    async fn records_arriving_while_a_batch_gathers_are_written_with_it_once_the_gathering_ends() {
        let (log, store) = started();
        log.record(record());
        // The writer has the first record and gathers.
        tokio::time::sleep(Duration::from_millis(1)).await;
        for _ in 0..4 {
            log.record(record());
        }
        tokio::time::sleep(LINGER / 2).await;
        assert!(
            store.sizes().is_empty(),
            "nothing is written while the batch gathers"
        );
        tokio::time::sleep(LINGER).await;
        assert_eq!(store.sizes(), vec![5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_ends_the_gathering_at_once_and_finds_every_record_queued_before_it() {
        let (log, store) = started();
        log.record(record());
        tokio::time::sleep(Duration::from_millis(1)).await;
        log.record(record());
        log.record(record());
        let asked = tokio::time::Instant::now();
        log.flush().await;
        assert!(
            asked.elapsed() < LINGER / 4,
            "the flush did not wait out the gathering"
        );
        assert_eq!(store.sizes(), vec![3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_waits_for_more_records_than_one_batch_holds_each_store_call_at_most_a_batch() {
        let (log, store) = started();
        for _ in 0..(2 * BATCH + 100) {
            log.record(record());
        }
        log.flush().await;
        let sizes = store.sizes();
        assert_eq!(sizes.iter().sum::<usize>(), 2 * BATCH + 100);
        assert!(sizes.iter().all(|&n| n <= BATCH), "{sizes:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn records_still_queued_when_the_gateway_goes_are_written_before_the_writer_ends() {
        let store = Arc::new(Batches::default());
        let (log, task) = MessageLog::start(store.clone(), Arc::new(Metrics::new()));
        for _ in 0..7 {
            log.record(record());
        }
        drop(log);
        task.await.unwrap();
        assert_eq!(store.sizes().iter().sum::<usize>(), 7);
    }
}
