//! Durable vs in-memory throughput and SYNC_STATUS (102) acknowledgement latency.
//!
//! Run with `cargo bench --bench durable` (about 1 minute after the build), or
//! `cargo bench --bench durable -- --quick` (about 15 s). `-- --help` lists the options.
//! docs/benchmarks.md explains the workload and records results.
//!
//! The bench starts two nodes in this process on `127.0.0.1:0`: one durable (SQLite store in a
//! fresh directory under `target/tmp`, removed at the end) and one with `memory: true`. Client
//! tasks in the same process connect over real WebSockets to `/rooms/{room}` (TCP_NODELAY on
//! the client side, as browsers do), complete the y-websocket handshake, then each writer
//! repeats a round until the scenario ends:
//!
//! 1. send `window` Y.Text insert updates (each a distinct `yrs` update from the writer's own
//!    `Doc` with its own client id, encoded with `encode_update_v1`), pipelined;
//! 2. send a SYNC_STATUS frame `[102, varUint8Array(varUint(seq))]` right after them, flush;
//! 3. wait for the 102 echo, which the server sends only once every earlier update of this
//!    client is applied (memory) or committed to disk (durable).
//!
//! Each writer types into its own root text (`w0`, `w1`, ...) of the room: a word ("hello ")
//! per update, 64 words per paragraph, each new paragraph at the top of its text. Bounded
//! runs matter: yrs squashes consecutive inserts of one client into one block, and encoding
//! an insert at the end of a block re-scans the block, so one ever-growing run makes every
//! update slower than the last (`--paragraph 0` shows it).
//!
//! A round's updates count as acknowledged, and its latency (102 sent -> echo received) is
//! recorded, when its echo arrives inside the measurement window (after the warm-up). A reader
//! task per connection drains everything the server sends (the echo and the broadcast of
//! every update in the room), and a room's writers wait while any connection of the room is
//! more than [`MAX_ROOM_LAG`] updates behind, so no client is closed as too slow (4429).
//!
//! Scenarios: {1 room, 100 rooms} x {pipelined (window 32), one-at-a-time (window 1)}, each
//! against the memory node and then the durable node, every scenario in fresh rooms. After
//! each scenario the bench checks that each room's document holds exactly what its writers
//! sent (so nothing was lost or double-counted). Besides rates and latencies it reports the
//! process's CPU use, other processes' CPU use (the machine may be shared), the durable
//! store's commits per second (`meta.change_seq`, read through a read-only connection) and
//! the bytes the process wrote to storage (`/proc/self/io`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, TextRef, Transact};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The string each update inserts (6 bytes: a word of typing).
const INSERT: &str = "hello ";
/// A round whose echo does not come back in this long fails the bench.
const ECHO_TIMEOUT: Duration = Duration::from_secs(30);
/// Connection setup (upgrade + handshake) limit per client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Opts {
    warmup: Duration,
    measure: Duration,
    window: usize,
    writers_one: usize,
    many_rooms: usize,
    writers_many: usize,
    data_dir: Option<PathBuf>,
    skip_latency: bool,
    only: Vec<String>,
    nodes: Vec<Kind>,
    server_nodelay: bool,
    paragraph: usize,
    compact_log_count: Option<u64>,
    compact_log_bytes: Option<u64>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(5),
            window: 32,
            writers_one: 4,
            many_rooms: 100,
            writers_many: 2,
            data_dir: None,
            skip_latency: false,
            only: Vec::new(),
            nodes: vec![Kind::Memory, Kind::Durable],
            server_nodelay: false,
            paragraph: 64,
            compact_log_count: None,
            compact_log_bytes: None,
        }
    }
}

const HELP: &str = "\
durable: updates/s and 102 ack latency, durable (SQLite) node vs memory node

usage: cargo bench --bench durable [-- OPTIONS]

  --quick              0.5 s warm-up + 1 s measurement per scenario (default 1 s + 5 s)
  --warmup SECS        warm-up per scenario
  --secs SECS          measurement per scenario
  --window K           updates per writer between 102s in the pipelined scenarios (32)
  --writers N          writers in the 1-room scenarios (4)
  --rooms N            rooms in the many-rooms scenarios (100)
  --writers-many N     writers per room in the many-rooms scenarios (2)
  --data-dir PATH      parent directory of the durable node's store (default target/tmp;
                       a fresh subdirectory is created and removed)
  --no-latency         skip the one-at-a-time (window 1) scenarios
  --only NAME          run only this scenario (repeatable): pipelined-1, pipelined-many,
                       single-1, single-many
  --node memory|durable  run only against this node (for profiling one side)
  --paragraph N        inserts per paragraph: a writer types N words one after another, then
                       starts a new paragraph at the top of its text (64); 0 = one
                       ever-growing run (yrs then re-scans the growing block per update)
  --compact-log-count N, --compact-log-bytes N
                       the durable node's compaction thresholds (`[store]` in mesh.toml;
                       default: the node's defaults)
  --server-nodelay     EXPERIMENT: set TCP_NODELAY on the node's accepted sockets from
                       outside the server (the server does not set it itself)
  --help               this text

libtest arguments that cargo passes (--bench, filters) are ignored.";

fn secs(v: Option<String>, flag: &str) -> Duration {
    let v = v.unwrap_or_else(|| die(&format!("{flag} needs a value")));
    let s: f64 = v
        .parse()
        .unwrap_or_else(|_| die(&format!("{flag}: not a number: {v}")));
    if !(s > 0.0 && s < 3600.0) {
        die(&format!("{flag}: out of range: {v}"));
    }
    Duration::from_secs_f64(s)
}

fn count(v: Option<String>, flag: &str) -> usize {
    let v = v.unwrap_or_else(|| die(&format!("{flag} needs a value")));
    match v.parse::<usize>() {
        Ok(n) if n >= 1 => n,
        _ => die(&format!("{flag}: expected a positive integer, got {v}")),
    }
}

fn die(msg: &str) -> ! {
    eprintln!("durable bench: {msg}\n\n{HELP}");
    std::process::exit(2)
}

fn parse_args() -> Opts {
    let mut o = Opts::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => {
                o.warmup = Duration::from_millis(500);
                o.measure = Duration::from_secs(1);
            }
            "--warmup" => o.warmup = secs(args.next(), "--warmup"),
            "--secs" => o.measure = secs(args.next(), "--secs"),
            "--window" => o.window = count(args.next(), "--window"),
            "--writers" => o.writers_one = count(args.next(), "--writers"),
            "--rooms" => o.many_rooms = count(args.next(), "--rooms"),
            "--writers-many" => o.writers_many = count(args.next(), "--writers-many"),
            "--data-dir" => {
                o.data_dir = Some(PathBuf::from(
                    args.next()
                        .unwrap_or_else(|| die("--data-dir needs a value")),
                ))
            }
            "--no-latency" => o.skip_latency = true,
            "--only" => o
                .only
                .push(args.next().unwrap_or_else(|| die("--only needs a value"))),
            "--node" => match args.next().as_deref() {
                Some("memory") => o.nodes = vec![Kind::Memory],
                Some("durable") => o.nodes = vec![Kind::Durable],
                _ => die("--node takes memory or durable"),
            },
            "--server-nodelay" => o.server_nodelay = true,
            "--compact-log-count" => {
                o.compact_log_count = Some(count(args.next(), "--compact-log-count") as u64)
            }
            "--compact-log-bytes" => {
                o.compact_log_bytes = Some(count(args.next(), "--compact-log-bytes") as u64)
            }
            "--paragraph" => {
                let v = args
                    .next()
                    .unwrap_or_else(|| die("--paragraph needs a value"));
                o.paragraph = v
                    .parse()
                    .unwrap_or_else(|_| die(&format!("--paragraph: not a number: {v}")));
            }
            "--help" | "-h" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            // What `cargo bench` passes to every bench target.
            "--bench" => {}
            other if other.starts_with('-') => {
                eprintln!("durable bench: ignoring unknown option {other}")
            }
            _ => {} // a libtest name filter: this bench has no named sub-benches
        }
    }
    o
}

// ---------------------------------------------------------------------------------------------
// Wire helpers (y-websocket framing, kept local so the bench does not depend on crate internals)

fn put_var_uint(b: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        b.put_u8((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    b.put_u8(n as u8);
}

fn read_var_uint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut n = 0u64;
    let mut shift = 0;
    loop {
        let byte = *b.get(*pos)?;
        *pos += 1;
        n |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(n);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// `[0, sub, varUint8Array(payload)]`
fn sync_frame(sub: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 8);
    b.put_u8(0);
    b.put_u8(sub);
    put_var_uint(&mut b, payload.len() as u64);
    b.put_slice(payload);
    b.freeze()
}

/// `[102, varUint8Array(varUint(seq))]`
fn sync_status_frame(seq: u64) -> Bytes {
    let mut inner = BytesMut::with_capacity(10);
    put_var_uint(&mut inner, seq);
    let mut b = BytesMut::with_capacity(12);
    b.put_u8(102);
    put_var_uint(&mut b, inner.len() as u64);
    b.put_slice(&inner);
    b.freeze()
}

/// The seq of a 102 echo.
fn sync_status_seq(frame: &[u8]) -> Option<u64> {
    let mut pos = 1;
    let _len = read_var_uint(frame, &mut pos)?;
    read_var_uint(frame, &mut pos)
}

// ---------------------------------------------------------------------------------------------
// Machine counters

/// CPU seconds used by this process (all threads: server and clients).
fn process_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state(0) ... utime(11) stime(12), in clock ticks.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clk_tck()
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Busy CPU seconds of the whole machine (every process), from /proc/stat.
fn machine_busy_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: f64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    busy / clk_tck()
}

/// Bytes this process caused to be written to storage (`write_bytes` in /proc/self/io):
/// WAL frames, checkpoints, snapshots.
fn disk_written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Commits (= fsync'd transactions) so far in the durable store: `meta.change_seq` grows by
/// one per group commit. Read through a separate read-only connection (WAL allows it).
fn store_commits(db: &Path) -> Option<u64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.query_row("SELECT value FROM meta WHERE key = 'change_seq'", [], |r| {
        r.get::<_, i64>(0)
    })
    .ok()
    .map(|v| v as u64)
}

// ---------------------------------------------------------------------------------------------
// Clients

/// Connects to `room` and completes the y-websocket handshake: our SyncStep1 is answered by a
/// SyncStep2; the server's SyncStep1 is answered with our (empty) state.
async fn connect(addr: std::net::SocketAddr, room: &str, doc: &Doc) -> Result<Ws, String> {
    let url = format!("ws://{addr}/rooms/{room}");
    // Browsers (and most WebSocket clients) disable Nagle's algorithm; so do we.
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .map_err(|e| format!("connect {room}: {e}"))?;
    let sv = doc.transact().state_vector().encode_v1();
    ws.send(WsMessage::Binary(sync_frame(0, &sv)))
        .await
        .map_err(|e| format!("send step1: {e}"))?;
    loop {
        let msg = ws
            .next()
            .await
            .ok_or("closed during handshake")?
            .map_err(|e| format!("handshake: {e}"))?;
        let WsMessage::Binary(b) = msg else {
            if let WsMessage::Close(c) = msg {
                return Err(format!("closed during handshake: {c:?}"));
            }
            continue;
        };
        match (b.first(), b.get(1)) {
            (Some(0), Some(0)) => {
                let update = doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                ws.send(WsMessage::Binary(sync_frame(1, &update)))
                    .await
                    .map_err(|e| format!("send step2: {e}"))?;
            }
            (Some(0), Some(1)) => return Ok(ws),
            _ => {}
        }
    }
}

/// Drains one connection: counts frames, hands 102 echoes to the writer with their arrival
/// time. Returns a description of an unexpected close, if any.
/// How far (in updates) a room's writers may run ahead of the slowest connection of the room
/// in receiving them. Without this bound, writers whose own echoes come back quickly can
/// outrun a connection the scheduler starves, until the node closes it with 4429 (its queue
/// holds 1024 frames). Real editors do not type faster than they receive; neither do these.
const MAX_ROOM_LAG: u64 = 512;

/// Per-room flow control between writers and readers (see [`MAX_ROOM_LAG`]).
struct RoomFlow {
    /// Updates sent by the room's writers.
    sent: AtomicU64,
    /// Update frames received, per connection (each connection receives every update).
    received: Vec<AtomicU64>,
    /// Set while a writer waits; readers then wake it.
    waiting: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
}

impl RoomFlow {
    fn new(connections: usize) -> Self {
        RoomFlow {
            sent: AtomicU64::new(0),
            received: (0..connections).map(|_| AtomicU64::new(0)).collect(),
            waiting: std::sync::atomic::AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn lag(&self) -> u64 {
        let slowest = self
            .received
            .iter()
            .map(|r| r.load(Ordering::Acquire))
            .min()
            .unwrap_or(0);
        self.sent.load(Ordering::Acquire).saturating_sub(slowest)
    }

    /// Waits until the slowest connection is at most [`MAX_ROOM_LAG`] updates behind.
    async fn wait_for_readers(&self) {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            self.waiting.store(true, Ordering::SeqCst);
            if self.lag() <= MAX_ROOM_LAG {
                return;
            }
            woken.await;
        }
    }

    fn received_one(&self, conn: usize) {
        self.received[conn].fetch_add(1, Ordering::AcqRel);
        if self.waiting.load(Ordering::SeqCst) {
            self.waiting.store(false, Ordering::SeqCst);
            self.wake.notify_waiters();
        }
    }
}

async fn reader_task(
    mut stream: SplitStream<Ws>,
    echoes: mpsc::UnboundedSender<(u64, Instant)>,
    delivered: Arc<AtomicU64>,
    flow: Arc<RoomFlow>,
    conn: usize,
) -> Option<String> {
    while let Some(msg) = stream.next().await {
        match msg {
            Ok(WsMessage::Binary(b)) => match b.first() {
                Some(102) => {
                    let now = Instant::now();
                    if let Some(seq) = sync_status_seq(&b) {
                        let _ = echoes.send((seq, now));
                    }
                }
                Some(0) => {
                    delivered.fetch_add(1, Ordering::Relaxed);
                    flow.received_one(conn);
                }
                _ => {}
            },
            Ok(WsMessage::Close(frame)) => {
                return match frame {
                    Some(f) if u16::from(f.code) != 1000 => {
                        Some(format!("server closed: {} {}", u16::from(f.code), f.reason))
                    }
                    _ => None,
                };
            }
            Ok(_) => {}
            Err(e) => return Some(format!("read error: {e}")),
        }
    }
    None
}

/// When a scenario's phases end.
#[derive(Clone, Copy)]
struct Plan {
    warm_end: Instant,
    end: Instant,
}

#[derive(Default)]
struct WriterResult {
    /// Updates acknowledged inside the measurement window.
    acked: u64,
    /// Round latencies (102 sent -> echo) inside the window.
    latencies: Vec<Duration>,
    /// Updates sent in total (warm-up included).
    sent: u64,
}

#[allow(clippy::too_many_arguments)]
async fn writer_task(
    mut sink: SplitSink<Ws, WsMessage>,
    mut echoes: mpsc::UnboundedReceiver<(u64, Instant)>,
    doc: Doc,
    text: TextRef,
    window: usize,
    paragraph: usize,
    flow: Arc<RoomFlow>,
    plan: Plan,
) -> Result<WriterResult, String> {
    let mut r = WriterResult::default();
    let mut seq = 0u64;
    // Byte offset of the cursor: right after this writer's previous insert.
    let mut cursor: u32 = 0;
    while Instant::now() < plan.end {
        flow.wait_for_readers().await;
        flow.sent.fetch_add(window as u64, Ordering::AcqRel);
        for _ in 0..window {
            if paragraph > 0 && r.sent % paragraph as u64 == 0 {
                cursor = 0; // a new paragraph at the top of the text
            }
            let update = {
                let mut txn = doc.transact_mut();
                text.insert(&mut txn, cursor, INSERT);
                txn.encode_update_v1()
            };
            cursor += INSERT.len() as u32;
            sink.feed(WsMessage::Binary(sync_frame(2, &update)))
                .await
                .map_err(|e| format!("send update: {e}"))?;
            r.sent += 1;
        }
        seq += 1;
        sink.feed(WsMessage::Binary(sync_status_frame(seq)))
            .await
            .map_err(|e| format!("send 102: {e}"))?;
        let sent_at = Instant::now();
        sink.flush().await.map_err(|e| format!("flush: {e}"))?;
        let (echo, at) = match tokio::time::timeout(ECHO_TIMEOUT, echoes.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => return Err("connection closed while waiting for a 102 echo".into()),
            Err(_) => return Err(format!("no 102 echo within {ECHO_TIMEOUT:?}")),
        };
        if echo != seq {
            return Err(format!("102 echo {echo} out of order (expected {seq})"));
        }
        if at >= plan.warm_end && at <= plan.end {
            r.acked += window as u64;
            r.latencies.push(at - sent_at);
        }
    }
    let _ = sink.send(WsMessage::Close(None)).await;
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// Scenarios

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Memory,
    Durable,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Memory => "memory",
            Kind::Durable => "durable",
        }
    }
}

struct Target {
    kind: Kind,
    node: ymesh::Node,
    db: Option<PathBuf>,
}

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    label: &'static str,
    rooms: usize,
    writers_per_room: usize,
    window: usize,
}

struct Outcome {
    updates_per_s: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    rounds: usize,
    deliveries_per_s: f64,
    cpu_pct: f64,
    others_pct: f64,
    commits_per_s: Option<f64>,
    disk_bytes_per_s: f64,
    errors: Vec<String>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn run_scenario(t: &Target, sc: &Scenario, tag: &str, opts: &Opts) -> Outcome {
    let addr = t.node.local_addr();
    // Connect everyone first (bounded concurrency), then start the clock.
    let mut clients = Vec::new();
    let mut next_client_id: u64 = 1_000;
    let mut specs = Vec::new();
    for room in 0..sc.rooms {
        for w in 0..sc.writers_per_room {
            next_client_id += 1;
            specs.push((format!("bench-{tag}-r{room}"), w, next_client_id));
        }
    }
    for chunk in specs.chunks(50) {
        let mut pending = Vec::new();
        for (room, w, client_id) in chunk.iter().cloned() {
            pending.push(tokio::spawn(async move {
                let doc = Doc::with_client_id(client_id);
                // Each writer types into its own root text: a real Y.Text insert per update,
                // cheap to integrate, so the bench measures the server rather than YATA
                // conflict resolution between writers typing at the same spot.
                let text = doc.get_or_insert_text(format!("w{w}").as_str());
                let ws = tokio::time::timeout(CONNECT_TIMEOUT, connect(addr, &room, &doc))
                    .await
                    .map_err(|_| format!("connect {room}: timed out"))??;
                Ok::<_, String>((room, doc, text, ws))
            }));
        }
        for p in pending {
            match p.await {
                Ok(Ok(c)) => clients.push(c),
                Ok(Err(e)) => panic!("{}: {e}", t.kind.name()),
                Err(e) => panic!("connect task: {e}"),
            }
        }
    }

    if opts.server_nodelay {
        let n = set_server_nodelay(addr.port());
        if n < clients.len() {
            eprintln!(
                "--server-nodelay: only {n} sockets of {} changed",
                clients.len()
            );
        }
    }

    let start = Instant::now();
    let plan = Plan {
        warm_end: start + opts.warmup,
        end: start + opts.warmup + opts.measure,
    };
    let delivered = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    let mut rooms: Vec<String> = Vec::new();
    let mut flow = Arc::new(RoomFlow::new(sc.writers_per_room));
    let mut conn = 0;
    for (room, doc, text, ws) in clients {
        if rooms.last() != Some(&room) {
            rooms.push(room.clone());
            flow = Arc::new(RoomFlow::new(sc.writers_per_room));
            conn = 0;
        }
        let (sink, stream) = ws.split();
        let (tx, rx) = mpsc::unbounded_channel();
        readers.push(tokio::spawn(reader_task(
            stream,
            tx,
            delivered.clone(),
            flow.clone(),
            conn,
        )));
        writers.push(tokio::spawn(writer_task(
            sink,
            rx,
            doc,
            text,
            sc.window,
            opts.paragraph,
            flow.clone(),
            plan,
        )));
        conn += 1;
    }

    // Sample counters at the window's edges.
    let db = t.db.clone();
    let sampler = {
        let delivered = delivered.clone();
        tokio::spawn(async move {
            let sample = |db: Option<PathBuf>, delivered: &AtomicU64| {
                let commits = db.as_deref().and_then(store_commits);
                (
                    process_cpu(),
                    machine_busy_cpu(),
                    delivered.load(Ordering::Relaxed),
                    commits,
                    disk_written(),
                )
            };
            tokio::time::sleep_until(plan.warm_end.into()).await;
            let a = sample(db.clone(), &delivered);
            tokio::time::sleep_until(plan.end.into()).await;
            let b = sample(db, &delivered);
            (a, b)
        })
    };

    let mut acked = 0u64;
    let mut sent = 0u64;
    let mut lat = Vec::new();
    let mut errors = Vec::new();
    for w in writers {
        match w.await {
            Ok(Ok(r)) => {
                acked += r.acked;
                sent += r.sent;
                lat.extend(r.latencies);
            }
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("writer task: {e}")),
        }
    }
    for r in readers {
        match tokio::time::timeout(Duration::from_secs(10), r).await {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(e))) => errors.push(e),
            Ok(Err(e)) => errors.push(format!("reader task: {e}")),
            Err(_) => errors.push("reader did not finish after close".into()),
        }
    }
    let ((cpu0, busy0, del0, com0, disk0), (cpu1, busy1, del1, com1, disk1)) =
        sampler.await.expect("sampler task");
    let m = opts.measure.as_secs_f64();

    // Every update any writer sent must be in its room: each was acknowledged by a 102.
    if errors.is_empty() {
        let mut in_rooms = 0u64;
        for room in &rooms {
            let r = t.node.room(room).await.expect("room open");
            in_rooms += r.with_doc(|doc| {
                let txn = doc.transact();
                (0..sc.writers_per_room)
                    .filter_map(|w| txn.get_text(format!("w{w}").as_str()))
                    .map(|text| text.get_string(&txn).len() as u64)
                    .sum::<u64>()
            });
        }
        let expected = sent * INSERT.len() as u64;
        if in_rooms != expected {
            errors.push(format!(
                "rooms hold {in_rooms} bytes of text, writers sent {expected}"
            ));
        }
    }

    lat.sort_unstable();
    let cpu = cpu1 - cpu0;
    Outcome {
        updates_per_s: acked as f64 / m,
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        max: lat.last().copied().unwrap_or_default(),
        rounds: lat.len(),
        deliveries_per_s: (del1 - del0) as f64 / m,
        cpu_pct: cpu / m * 100.0,
        others_pct: ((busy1 - busy0) - cpu).max(0.0) / m * 100.0,
        commits_per_s: match (com0, com1) {
            (Some(a), Some(b)) => Some((b - a) as f64 / m),
            _ => None,
        },
        disk_bytes_per_s: disk1.saturating_sub(disk0) as f64 / m,
        errors,
    }
}

// ---------------------------------------------------------------------------------------------
// Output

fn fmt_rate(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// Removes the durable node's data directory however the bench ends.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() {
    let opts = parse_args();
    let parent = opts
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let dir = parent.join(format!("bench-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the bench data directory");
    let guard = DirGuard(dir.clone());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let failed = rt.block_on(run(opts, dir));
    rt.shutdown_timeout(Duration::from_secs(5));
    drop(guard);
    if failed {
        std::process::exit(1);
    }
}

async fn start(kind: Kind, dir: &Path, opts: &Opts) -> Target {
    let mut cfg = ymesh::config::Config {
        port: 0,
        data_dir: dir.to_path_buf(),
        memory: kind == Kind::Memory,
        // No room is evicted (and compacted in the background) during the run.
        idle_timeout: Duration::from_secs(3600),
        ..Default::default()
    };
    cfg.host = "127.0.0.1".into();
    if let Some(n) = opts.compact_log_count {
        cfg.store.compact_log_count = n;
    }
    if let Some(n) = opts.compact_log_bytes {
        cfg.store.compact_log_bytes = n;
    }
    let node = ymesh::Node::start(cfg)
        .await
        .unwrap_or_else(|e| panic!("{} node: {e}", kind.name()));
    let db = (kind == Kind::Durable).then(|| dir.join("ymesh.sqlite3"));
    Target { kind, node, db }
}

async fn run(opts: Opts, dir: PathBuf) -> bool {
    let mut targets = Vec::new();
    for &kind in &opts.nodes {
        targets.push(start(kind, &dir, &opts).await);
    }
    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());

    println!("ymesh durable bench");
    println!(
        "  {threads} CPUs, one tokio multi-thread runtime shared by the nodes and all clients"
    );
    println!(
        "  warm-up {:?}, measurement {:?} per scenario; store in {}",
        opts.warmup,
        opts.measure,
        dir.display()
    );
    if opts.compact_log_count.is_some() || opts.compact_log_bytes.is_some() {
        println!(
            "  durable node compaction thresholds: log count {:?}, log bytes {:?} (None = default)",
            opts.compact_log_count, opts.compact_log_bytes
        );
    }
    if opts.server_nodelay {
        println!("  EXPERIMENT: TCP_NODELAY set on the node's accepted sockets by the bench");
    }
    println!("  load average at start: {}", loadavg());
    println!();

    let all = [
        Scenario {
            name: "pipelined-1",
            label: "pipelined",
            rooms: 1,
            writers_per_room: opts.writers_one,
            window: opts.window,
        },
        Scenario {
            name: "pipelined-many",
            label: "pipelined",
            rooms: opts.many_rooms,
            writers_per_room: opts.writers_many,
            window: opts.window,
        },
        Scenario {
            name: "single-1",
            label: "one-at-a-time",
            rooms: 1,
            writers_per_room: opts.writers_one,
            window: 1,
        },
        Scenario {
            name: "single-many",
            label: "one-at-a-time",
            rooms: opts.many_rooms,
            writers_per_room: opts.writers_many,
            window: 1,
        },
    ];
    for name in &opts.only {
        if !all.iter().any(|s| s.name == name) {
            die(&format!("--only: no scenario named {name}"));
        }
    }
    let scenarios: Vec<&Scenario> = all
        .iter()
        .filter(|s| {
            if opts.only.is_empty() {
                !(opts.skip_latency && s.window == 1)
            } else {
                opts.only.iter().any(|n| n == s.name)
            }
        })
        .collect();

    println!(
        "{:<14} {:>5} {:>5} {:>6} {:<8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>6} {:>6}",
        "scenario",
        "rooms",
        "conns",
        "window",
        "node",
        "updates/s",
        "ack p50",
        "ack p99",
        "ack max",
        "rounds",
        "deliver/s",
        "commits/s",
        "cpu%",
        "other%"
    );
    let mut failed = false;
    let mut summary = Vec::new();
    for (i, sc) in scenarios.iter().enumerate() {
        let mut rates = Vec::new();
        for t in &targets {
            let tag = format!("{i}-{}", t.kind.name());
            let o = run_scenario(t, sc, &tag, &opts).await;
            println!(
                "{:<14} {:>5} {:>5} {:>6} {:<8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>6.0} {:>6.0}",
                sc.label,
                sc.rooms,
                sc.rooms * sc.writers_per_room,
                sc.window,
                t.kind.name(),
                fmt_rate(o.updates_per_s),
                fmt_dur(o.p50),
                fmt_dur(o.p99),
                fmt_dur(o.max),
                o.rounds,
                fmt_rate(o.deliveries_per_s),
                o.commits_per_s.map(fmt_rate).unwrap_or_else(|| "-".into()),
                o.cpu_pct,
                o.others_pct,
            );
            if let Some(c) = o.commits_per_s.filter(|&c| c > 0.0) {
                let per_update = if o.updates_per_s > 0.0 {
                    o.disk_bytes_per_s / o.updates_per_s
                } else {
                    0.0
                };
                println!(
                    "{:<14} {:>5} {:>5} {:>6} {:<8} ~{:.0} updates per commit; disk writes {:.1} MB/s, {:.0} bytes per update",
                    "",
                    "",
                    "",
                    "",
                    "",
                    o.updates_per_s / c,
                    o.disk_bytes_per_s / 1e6,
                    per_update,
                );
            }
            for e in &o.errors {
                failed = true;
                println!("  ERROR ({} node): {e}", t.kind.name());
            }
            rates.push((t.kind, o.updates_per_s));
        }
        let rate = |k: Kind| rates.iter().find(|(kind, _)| *kind == k).map(|r| r.1);
        if let (Some(m), Some(d)) = (rate(Kind::Memory), rate(Kind::Durable)) {
            summary.push((*sc, if m > 0.0 { d / m } else { 0.0 }));
        }
    }

    if !summary.is_empty() {
        println!();
        println!(
            "durable / memory updates per second (goal: at least 0.50 for 1 and 100 busy rooms)"
        );
        for (sc, ratio) in &summary {
            let verdict = if sc.window == 1 {
                "(one update per round trip: latency-bound, not the goal's workload)"
            } else if *ratio >= 0.5 {
                "meets the goal"
            } else {
                "MISSES the goal"
            };
            println!(
                "  {:<14} {:>3} room(s), window {:>2}: {:.2}  {verdict}",
                sc.label, sc.rooms, sc.window, ratio
            );
        }
    }
    println!();
    println!("load average at end: {}", loadavg());

    for t in targets {
        t.node.shutdown().await;
    }
    failed
}

/// EXPERIMENT (`--server-nodelay`): sets TCP_NODELAY on every socket of this process whose
/// local port is `port`, i.e. the node's listener and the connections it accepted. This is
/// what `Node::start` could do with `ListenerExt::tap_io`; the bench does it from outside to
/// show the effect.
fn set_server_nodelay(port: u16) -> usize {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut n = 0;
    for entry in fds.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: getsockname/setsockopt on an fd number we own; both fail harmlessly with
        // ENOTSOCK (or similar) when it is not a TCP socket.
        unsafe {
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if libc::getsockname(fd, &mut addr as *mut _ as *mut libc::sockaddr, &mut len) != 0
                || i32::from(addr.sin_family) != libc::AF_INET
                || u16::from_be(addr.sin_port) != port
            {
                continue;
            }
            let one: libc::c_int = 1;
            if libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
            {
                n += 1;
            }
        }
    }
    n
}
