//! A node in a process of its own, for tests that measure the node's memory: its peak
//! resident set (`VmHWM` in `/proc/PID/status`) belongs to it alone, where an in-process
//! node shares the test binary's. Plus [`Liveness`], a client that keeps using the node
//! while an attack runs and reports how long its slowest round trip took.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{fresh_dir, spawn_until_ready, SyncClient, WAIT};

/// `ymesh serve` on a free loopback port with a fresh data directory and mDNS off; killed
/// when dropped.
pub struct ProcessNode {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ProcessNode {
    /// Starts the node with `extra` arguments after the defaults and waits for its ready line.
    pub fn start(extra: &[&str]) -> ProcessNode {
        let dir = fresh_dir("process-node");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ymesh"));
        cmd.args(["serve", "--port", "0", "--no-mdns", "--data-dir"])
            .arg(&dir)
            .args(extra);
        let (child, _, port) = spawn_until_ready(cmd);
        ProcessNode {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// A field of `/proc/PID/status` in KiB (`VmHWM`, `VmRSS`).
    fn status_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {path}"))
    }

    /// The most memory the node has held resident since it started, in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        self.status_kib("VmHWM") / 1024
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that the node's peak resident memory stayed within `budget_mib` of `baseline_mib`
/// (a peak read before the attack).
pub fn assert_peak_within(node: &ProcessNode, baseline_mib: u64, budget_mib: u64, what: &str) {
    let peak = node.peak_rss_mib();
    eprintln!(
        "{what}: peak RSS {peak} MiB (baseline {baseline_mib} MiB, budget +{budget_mib} MiB)"
    );
    assert!(
        peak <= baseline_mib + budget_mib,
        "{what}: the node's peak RSS reached {peak} MiB, more than {budget_mib} MiB over its \
         baseline of {baseline_mib} MiB"
    );
}

/// A well-behaved client using the node while something else attacks it: in a loop, an edit
/// in its own room acknowledged with a SYNC_STATUS echo, then `GET /healthz`. Each round trip
/// is bounded by `WAIT`; [`Liveness::stop`] reports the rounds done and the slowest one.
pub struct Liveness {
    stop: Arc<AtomicBool>,
    done: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<(usize, Duration)>,
}

impl Liveness {
    /// Connects to `addr` and starts the loop.
    pub async fn start(addr: SocketAddr) -> Liveness {
        let mut client = SyncClient::connect(addr, "liveness-watch").await;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = done.clone();
        let task = tokio::spawn(async move {
            let mut rounds = 0usize;
            let mut slowest = Duration::ZERO;
            // Bounded in count as well as by the caller's stop.
            while !flag.load(Ordering::Relaxed) && rounds < 100_000 {
                let t0 = Instant::now();
                tokio::time::timeout(
                    WAIT,
                    client.edit_acked(|txn| {
                        use yrs::{Text, WriteTxn};
                        let text = txn.get_or_insert_text("t");
                        text.insert(txn, 0, "x");
                    }),
                )
                .await
                .expect("the node answered an edit in time while under attack");
                let (status, _) = tokio::time::timeout(WAIT, super::http(addr, "GET", "/healthz"))
                    .await
                    .expect("the node answered GET /healthz in time while under attack");
                assert_eq!(status, 200);
                slowest = slowest.max(t0.elapsed());
                rounds += 1;
                counter.store(rounds, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (rounds, slowest)
        });
        Liveness { stop, done, task }
    }

    /// Lets the loop finish at least one round after the attack (a quick attack may end
    /// before the first), then stops it; asserts no round took longer than `max`.
    pub async fn stop(self, max: Duration) {
        let after = self.done.load(Ordering::Relaxed);
        let deadline = Instant::now() + WAIT;
        while self.done.load(Ordering::Relaxed) <= after && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let (rounds, slowest) = self.task.await.expect("liveness loop did not panic");
        eprintln!("liveness: {rounds} rounds, slowest {slowest:?}");
        assert!(rounds >= 1, "the well-behaved client completed no round");
        assert!(
            slowest <= max,
            "a well-behaved client waited {slowest:?} for the node (allowed {max:?})"
        );
    }
}
