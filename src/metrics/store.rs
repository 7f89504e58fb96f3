//! The store writer's counters (appends, commits, failed commits, compactions, the largest
//! batch, commit latency and batch size histograms): the writer thread bumps them, the node's
//! [`super::Metrics`] reads them once attached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};

use super::prom;

/// The store writer's counters. The writer thread bumps them; anyone may read them.
#[derive(Debug)]
pub struct StoreCounters {
    appends: AtomicU64,
    commits: AtomicU64,
    failed_commits: AtomicU64,
    compactions: AtomicU64,
    max_batch: AtomicU64,
    /// Seconds per commit (write and fsync), failed ones included.
    pub(super) commit_seconds: Histogram,
    /// Appends per committed batch.
    pub(super) batch_sizes: Histogram,
}

impl Default for StoreCounters {
    fn default() -> Self {
        StoreCounters {
            appends: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            failed_commits: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            max_batch: AtomicU64::new(0),
            commit_seconds: Histogram::new(prom::latency_buckets()),
            batch_sizes: Histogram::new(prom::batch_buckets()),
        }
    }
}

impl StoreCounters {
    /// Records how long one commit took (committed or failed), and for a committed one its
    /// batch size; the writer calls this beside [`StoreCounters::committed`] or
    /// [`StoreCounters::commit_failed`].
    pub fn commit_took(&self, took: Duration, appends: Option<u64>) {
        self.commit_seconds.observe(took.as_secs_f64());
        if let Some(n) = appends {
            self.batch_sizes.observe(n as f64);
        }
    }

    /// Counts one committed transaction holding `appends` appends.
    pub fn committed(&self, appends: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.appends.fetch_add(appends, Ordering::Relaxed);
        self.max_batch.fetch_max(appends, Ordering::Relaxed);
    }

    /// Counts one batch whose commit failed.
    pub fn commit_failed(&self) {
        self.failed_commits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one compaction (automatic or requested).
    pub fn compacted(&self) {
        self.compactions.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn counts(&self) -> StoreCounts {
        StoreCounts {
            appends: self.appends.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
            compactions: self.compactions.load(Ordering::Relaxed),
            max_batch: self.max_batch.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of [`StoreCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreCounts {
    /// Appends committed.
    pub appends: u64,
    /// Transactions that committed appends (one per batch).
    pub commits: u64,
    /// Batches whose commit failed.
    pub failed_commits: u64,
    /// Compactions done (automatic and requested).
    pub compactions: u64,
    /// The largest number of appends committed in one transaction.
    pub max_batch: u64,
}
