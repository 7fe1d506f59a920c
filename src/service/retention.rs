//! What the gateway keeps, and for how long: message-log records for `[log] retention_days`, finished
//! jobs (failed, completed, export-failed, expired, deleted) for `[jobs] retention_days` after their
//! last change. One task prunes both when the gateway starts and every [`PRUNE_EVERY`] after, in short
//! transactions with a pause between them, beside the store's writes (never holding them long).
//! Replicas sharing a store each prune; the deletes are the same whoever runs them.

use crate::observe::metrics::Metrics;
use crate::store::{JobStore, MessageLogStore, Store, StoreError};
use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often old records and jobs are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Rows deleted per transaction: a few milliseconds of the store's time (with 5,000, kick-offs waited
/// up to 218 ms behind a chunk on a 10-million-record log: benches/message_log.sh).
const PRUNE_CHUNK: u32 = 1_000;
/// The pause between chunks, in which kick-offs and the log's own writes commit without one.
const PRUNE_PAUSE: Duration = Duration::from_millis(10);

/// How long each kind of row is kept, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// `[log] retention_days`.
    pub log_days: u32,
    /// `[jobs] retention_days`.
    pub job_days: u32,
}

impl Retention {
    /// Starts the pruning task on the current runtime: it prunes at once, then every hour, counting
    /// what it deletes (and rounds that fail) in `fhirgate_retention_total`.
    pub fn start(
        self,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut prune = tokio::time::interval(PRUNE_EVERY);
            prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                prune.tick().await;
                prune_logs_now(store.as_ref(), self.log_days, &metrics).await;
                prune_jobs_now(store.as_ref(), self.job_days, &metrics).await;
            }
        })
    }
}

/// The time before which rows `days` old are past their retention (at least one day).
fn cutoff(days: u32) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::days(i64::from(days.max(1)))
}

/// Deletes message-log records older than `days`; how many went.
pub async fn prune_logs_now(store: &dyn MessageLogStore, days: u32, metrics: &Metrics) -> u64 {
    let before = cutoff(days);
    in_chunks("message_log", metrics, |limit| {
        store.prune_logs(before, limit)
    })
    .await
}

/// Deletes finished jobs (and their attempts) created and last changed more than `days` ago; how many
/// went. Their status URLs answer 404 from then on, and the same envelope sent again is a new job.
pub async fn prune_jobs_now(store: &dyn JobStore, days: u32, metrics: &Metrics) -> u64 {
    let before = cutoff(days);
    in_chunks("jobs", metrics, |limit| store.prune_jobs(before, limit)).await
}

/// Calls `chunk` with [`PRUNE_CHUNK`] until fewer than that go (or it fails, which is logged, counted
/// and tried again at the next round), pausing between chunks; the total, counted as it goes.
async fn in_chunks<F, Fut>(what: &'static str, metrics: &Metrics, mut chunk: F) -> u64
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    loop {
        match chunk(PRUNE_CHUNK).await {
            Ok(n) => {
                total += n;
                metrics.retention(what, "pruned", n);
                if n < u64::from(PRUNE_CHUNK) {
                    break;
                }
                // Let the writes queued meanwhile commit without a chunk in their group.
                tokio::time::sleep(PRUNE_PAUSE).await;
            }
            Err(e) => {
                metrics.retention(what, "failed", 1);
                tracing::warn!(message = "Pruning failed; it is tried again within the hour.", what, error = %e);
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(
            message = "Pruned rows past their retention.",
            what,
            rows = total
        );
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn counted(metrics: &Metrics, labels: &str) -> String {
        let text = metrics.render().unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("fhirgate_retention_total{{{labels}}}")));
        line.unwrap_or("none")
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn pruning_goes_on_in_chunks_until_one_comes_back_short() {
        let metrics = Metrics::new();
        let asked = Mutex::new(Vec::new());
        let answers = Mutex::new(vec![Ok(1_000), Ok(1_000), Ok(17), Ok(1_000)]);
        let total = in_chunks("jobs", &metrics, |limit| {
            asked.lock().unwrap().push(limit);
            let next = answers.lock().unwrap().remove(0);
            async move { next }
        })
        .await;
        assert_eq!(total, 2_017);
        assert_eq!(*asked.lock().unwrap(), vec![PRUNE_CHUNK; 3]);
        assert_eq!(counted(&metrics, r#"kind="jobs",outcome="pruned""#), "2017");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_chunk_ends_the_round_with_what_went_before_it_and_is_counted() {
        let metrics = Metrics::new();
        let answers = Mutex::new(vec![
            Ok(1_000),
            Err(StoreError::Unavailable("down".into())),
            Ok(1_000),
        ]);
        let total = in_chunks("message_log", &metrics, |_| {
            let next = answers.lock().unwrap().remove(0);
            async move { next }
        })
        .await;
        assert_eq!(total, 1_000);
        assert_eq!(
            answers.lock().unwrap().len(),
            1,
            "no chunk after the failure"
        );
        assert_eq!(
            counted(&metrics, r#"kind="message_log",outcome="pruned""#),
            "1000"
        );
        assert_eq!(
            counted(&metrics, r#"kind="message_log",outcome="failed""#),
            "1"
        );
    }

    #[test]
    fn the_cutoff_is_the_retention_ago_and_never_less_than_a_day() {
        let a_day = chrono::Duration::days(1);
        let thirty = Utc::now() - chrono::Duration::days(30);
        assert!((cutoff(30) - thirty).abs() < chrono::Duration::seconds(5));
        assert!((cutoff(0) - (Utc::now() - a_day)).abs() < chrono::Duration::seconds(5));
    }
}
