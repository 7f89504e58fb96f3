//! The last minutes of the node, sampled: a ring buffer the status page draws its charts
//! from (updates per second, connections, each peer's link state over time).
//!
//! A sample holds cumulative counters, not rates: the page divides the difference of two
//! samples by their distance in time, so a missed or late sample never invents a spike.
//! The node's sampler (in `crate::ui`) takes one every [`SAMPLE_EVERY`]; the buffer keeps
//! [`SAMPLES`] of them (ten minutes), oldest first.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

/// Time between two samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept: ten minutes at [`SAMPLE_EVERY`].
pub const SAMPLES: usize = 300;

/// The node at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// When (unix ms).
    pub t_ms: u64,
    /// Document changes applied so far ([`super::Metrics::updates_applied`]).
    pub updates: u64,
    /// Awareness updates that changed presence so far.
    pub awareness: u64,
    /// Client connections open.
    pub connections: usize,
    /// Each peer's link state (`GET /peers` `state`), by peer label.
    pub peers: BTreeMap<String, &'static str>,
}

/// The ring buffer.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

/// The buffer as the status feed shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryView {
    /// Milliseconds between samples.
    pub every_ms: u64,
    /// Oldest first.
    pub samples: Vec<Sample>,
}

impl History {
    /// Adds a sample, dropping the oldest past [`SAMPLES`].
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample was taken yet.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Every sample, oldest first.
    pub fn view(&self) -> HistoryView {
        HistoryView {
            every_ms: SAMPLE_EVERY.as_millis() as u64,
            samples: self.samples.iter().cloned().collect(),
        }
    }
}
