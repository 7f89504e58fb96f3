//! Load generator for any y-websocket server: ymesh, the JavaScript reference server, y-sweet.
//!
//! Run with `cargo bench --bench load -- --url ws://127.0.0.1:PORT/rooms/{room} --pid PID ...`
//! (`-- --help` lists the options). benches/compare.sh runs it against each server and
//! docs/benchmarks.md records the results.
//!
//! The server runs in its own process; this one only drives clients, and reads the server's
//! CPU time and resident memory from `/proc/PID` (`--pid`), so the figures are the server's
//! alone. Everything is on loopback and bounded: a fixed number of connections and updates,
//! every wait under a deadline (`--timeout` for the whole run).
//!
//! **Traffic mode** (default): R rooms x C clients. Each client connects, sends a SyncStep1,
//! answers the server's SyncStep1 with an empty SyncStep2 and counts as synced when a SyncStep2
//! arrives (connect+sync time). The first W clients of each room (`--writers`, default all)
//! then send U updates each: Y.Text inserts of S bytes at the end of the writer's own text
//! run in the room's text `t` (typing; a new run at the top every `--paragraph` updates, as
//! benches/durable.rs does, since one ever-growing run makes every server's cost per update
//! grow with the run), pre-encoded before the clock starts so encoding costs
//! the generator nothing during the run. Each insert starts with a marker (`YQ`, the writer
//! and sequence numbers in hex, `Z`) that receivers find in whatever frame the server sends
//! (forwarded as received, re-encoded or merged), so every delivery is counted once per
//! receiver, its latency measured from the moment its writer sent it, and a missing one noticed.
//! Deliveries are to other clients of the room (a writer's own echo is not counted). At a set
//! aggregate rate (`--rate`, updates per second over all writers, evenly spaced) or flat out
//! (each room at most `--window` updates ahead of its slowest receiver, so no server has to
//! close a client as too slow). With `--read-url`, receivers are separate connections to that
//! URL (another node: the latency then includes the mesh hops between them).
//!
//! **Idle mode** (`--idle N`): opens one connection per room (R rooms), then the remaining
//! N - R connections, each sending a SyncStep1 and one awareness state like a stock client,
//! and reads the server's RSS after each phase has settled: memory per connection from the
//! second phase, memory per room from the first minus one connection.
//!
//! The result is printed readably and as one `RESULT {json}` line for scripts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use yrs::{Doc, Text, Transact};

type Ws = WebSocketStream<TcpStream>;

const HELP: &str = "load generator for y-websocket servers (docs/benchmarks.md)

  --url T            WebSocket URL template, {room} replaced (ws://127.0.0.1:3913/rooms/{room})
  --read-url T       receivers connect here instead (another node of a mesh)
  --create URL       POST {\"docId\": room} here before connecting (y-sweet: http://HOST:PORT/doc/new)
  --pid N            the server's process id: CPU and RSS from /proc/N (repeatable: summed)
  --rooms R          rooms (default 1)
  --clients C        clients per room (default 2)
  --writers W        writers per room (default: every client)
  --updates U        updates per writer (default 100)
  --size S           bytes of text per update, at least 19 (default 100)
  --paragraph N      updates per typed run; the next starts at the top (default 64; 0 = one run)
  --rate X           aggregate updates per second over all writers; 0 = flat out (default 0)
  --window N         flat out: updates a room may be ahead of its slowest receiver (default 256)
  --idle N           idle mode: N connections over R rooms, memory per connection and room
  --settle SECS      idle mode: wait after each phase before reading RSS (default 3)
  --connect-parallel N  connections opened at once (default 64)
  --drain SECS       give up waiting for deliveries after this long without one (default 10)
  --timeout SECS     bound of the whole run (default 300)
  --threads N        client runtime threads (default 1)
  --label TEXT       name printed with the result";

/// Marker at the start of every insert: `YQ` + 8 hex (writer) + 8 hex (sequence) + `Z`.
const MARK_LEN: usize = 19;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Opts {
    url: String,
    read_url: Option<String>,
    create: Option<String>,
    pids: Vec<u32>,
    rooms: usize,
    clients: usize,
    writers: Option<usize>,
    updates: usize,
    size: usize,
    paragraph: usize,
    rate: f64,
    window: u64,
    idle: Option<usize>,
    settle: Duration,
    parallel: usize,
    drain: Duration,
    timeout: Duration,
    threads: usize,
    label: String,
}

fn die(msg: &str) -> ! {
    eprintln!("load: {msg}\n\n{HELP}");
    std::process::exit(2)
}

fn parse_args() -> Opts {
    let mut o = Opts {
        url: String::new(),
        read_url: None,
        create: None,
        pids: Vec::new(),
        rooms: 1,
        clients: 2,
        writers: None,
        updates: 100,
        size: 100,
        paragraph: 64,
        rate: 0.0,
        window: 256,
        idle: None,
        settle: Duration::from_secs(3),
        parallel: 64,
        drain: Duration::from_secs(10),
        timeout: Duration::from_secs(300),
        threads: 1,
        label: String::new(),
    };
    let mut args = std::env::args().skip(1);
    fn val(args: &mut impl Iterator<Item = String>, flag: &str) -> String {
        args.next()
            .unwrap_or_else(|| die(&format!("{flag} needs a value")))
    }
    fn num<T: std::str::FromStr>(v: String, flag: &str) -> T {
        v.parse()
            .unwrap_or_else(|_| die(&format!("{flag}: not a number: {v}")))
    }
    while let Some(a) = args.next() {
        match a.as_str() {
            "--url" => o.url = val(&mut args, &a),
            "--read-url" => o.read_url = Some(val(&mut args, &a)),
            "--create" => o.create = Some(val(&mut args, &a)),
            "--pid" => o.pids.push(num(val(&mut args, &a), &a)),
            "--rooms" => o.rooms = num(val(&mut args, &a), &a),
            "--clients" => o.clients = num(val(&mut args, &a), &a),
            "--writers" => o.writers = Some(num(val(&mut args, &a), &a)),
            "--updates" => o.updates = num(val(&mut args, &a), &a),
            "--size" => o.size = num(val(&mut args, &a), &a),
            "--paragraph" => o.paragraph = num(val(&mut args, &a), &a),
            "--rate" => o.rate = num(val(&mut args, &a), &a),
            "--window" => o.window = num(val(&mut args, &a), &a),
            "--idle" => o.idle = Some(num(val(&mut args, &a), &a)),
            "--settle" => o.settle = Duration::from_secs_f64(num(val(&mut args, &a), &a)),
            "--connect-parallel" => o.parallel = num(val(&mut args, &a), &a),
            "--drain" => o.drain = Duration::from_secs_f64(num(val(&mut args, &a), &a)),
            "--timeout" => o.timeout = Duration::from_secs_f64(num(val(&mut args, &a), &a)),
            "--threads" => o.threads = num(val(&mut args, &a), &a),
            "--label" => o.label = val(&mut args, &a),
            "--help" | "-h" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            // What `cargo bench` passes to every bench target.
            "--bench" => {}
            other => die(&format!("unknown option {other}")),
        }
    }
    if o.url.is_empty() {
        die("--url is required");
    }
    if o.size < MARK_LEN {
        die("--size must be at least 19");
    }
    o.rooms = o.rooms.max(1);
    o.parallel = o.parallel.max(1);
    o.threads = o.threads.max(1);
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

/// `[type, sub, varUint8Array(payload)]`
fn frame(kind: u8, sub: Option<u8>, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 8);
    b.put_u8(kind);
    if let Some(sub) = sub {
        b.put_u8(sub);
    }
    put_var_uint(&mut b, payload.len() as u64);
    b.put_slice(payload);
    b.freeze()
}

/// One awareness state, as a stock client announces itself.
fn awareness_frame(client: u64, name: &str) -> Bytes {
    let mut u = BytesMut::new();
    put_var_uint(&mut u, 1);
    put_var_uint(&mut u, client);
    put_var_uint(&mut u, 1);
    let state = format!("{{\"user\":{{\"name\":\"{name}\"}}}}");
    put_var_uint(&mut u, state.len() as u64);
    u.put_slice(state.as_bytes());
    frame(1, None, &u)
}

fn marker(writer: u32, seq: u32) -> String {
    format!("YQ{writer:08x}{seq:08x}Z")
}

fn hex8(b: &[u8]) -> Option<u32> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
}

/// Every (writer, seq) marker inside a frame.
fn markers(frame: &[u8], mut f: impl FnMut(u32, u32)) {
    let mut i = 0;
    while i + MARK_LEN <= frame.len() {
        if frame[i] == b'Y' && frame[i + 1] == b'Q' && frame[i + MARK_LEN - 1] == b'Z' {
            if let (Some(w), Some(s)) = (hex8(&frame[i + 2..i + 10]), hex8(&frame[i + 10..i + 18]))
            {
                f(w, s);
                i += MARK_LEN;
                continue;
            }
        }
        i += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU time of the server processes, None without `--pid`.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    /// utime + stime from `/proc/PID/stat`: every thread, exited ones included, in clock
    /// ticks (10 ms here).
    ticks_s: f64,
    /// Sum of the live threads' `/proc/PID/task/*/schedstat` run time: nanosecond precision,
    /// but a thread that exits takes its time with it.
    sched_s: f64,
}

fn server_cpu(pids: &[u32]) -> Option<Cpu> {
    if pids.is_empty() {
        return None;
    }
    let mut cpu = Cpu {
        ticks_s: 0.0,
        sched_s: 0.0,
    };
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        cpu.ticks_s += (ticks(11) + ticks(12)) / clk_tck();
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                let ns = std::fs::read_to_string(t.path().join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
                    .unwrap_or(0.0);
                cpu.sched_s += ns / 1e9;
            }
        }
    }
    Some(cpu)
}

/// Server CPU seconds between two readings: the precise per-thread sum when no thread took
/// its time away (it agrees with the tick count within a tick), else the tick count.
fn cpu_between(a: Option<Cpu>, b: Option<Cpu>) -> Option<f64> {
    let (a, b) = (a?, b?);
    let ticks = b.ticks_s - a.ticks_s;
    let sched = b.sched_s - a.sched_s;
    let tick = 1.0 / clk_tck();
    if sched >= 0.0 && (sched - ticks).abs() <= 2.0 * tick + 0.05 * ticks {
        Some(sched)
    } else {
        Some(ticks)
    }
}

/// Resident memory (VmRSS) of the server processes in kB.
fn server_rss(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    let mut total = 0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        total += line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// CPU seconds used by every process on the machine (from /proc/stat), to tell how busy the
/// machine was besides the server.
fn machine_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
    let busy: f64 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, v)| v)
        .sum();
    busy / clk_tck()
}

fn own_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clk_tck()
}

fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connections

/// Splits `ws://host:port/path` into the address and the path.
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("only ws:// and http:// URLs: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((host.to_string(), path.to_string()))
}

/// `POST {"docId": room}` (y-sweet's `/doc/new`), on a connection of its own.
async fn create_room(url: &str, room: &str) -> Result<(), String> {
    let (host, path) = split_url(url)?;
    let body = format!("{{\"docId\":\"{room}\"}}");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(&host)
        .await
        .map_err(|e| format!("create {room}: {e}"))?;
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("create {room}: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .await
        .map_err(|e| format!("create {room}: {e}"))?;
    let head = String::from_utf8_lossy(&resp[..resp.len().min(40)]).to_string();
    if head.starts_with("HTTP/1.1 2") || head.starts_with("HTTP/1.0 2") {
        Ok(())
    } else {
        Err(format!("create {room}: {head}"))
    }
}

/// Opens a WebSocket (small buffers: the generator must stay cheap per connection), sends a
/// SyncStep1 (and an awareness state when given), answers the server's SyncStep1, and returns
/// once a SyncStep2 arrived.
async fn connect(url: &str, awareness: Option<Bytes>) -> Result<Ws, String> {
    let (host, _) = split_url(url)?;
    let tcp = TcpStream::connect(&host)
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    // Browsers disable Nagle's algorithm; so do we.
    let _ = tcp.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(64 << 20));
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
        .await
        .map_err(|e| format!("upgrade {url}: {e}"))?;
    ws.feed(WsMessage::Binary(frame(0, Some(0), &[0])))
        .await
        .map_err(|e| format!("send step1: {e}"))?;
    if let Some(a) = awareness {
        ws.feed(WsMessage::Binary(a))
            .await
            .map_err(|e| format!("send awareness: {e}"))?;
    }
    ws.flush().await.map_err(|e| format!("flush: {e}"))?;
    loop {
        let msg = ws
            .next()
            .await
            .ok_or("closed during sync")?
            .map_err(|e| format!("sync: {e}"))?;
        let b = match msg {
            WsMessage::Binary(b) => b,
            WsMessage::Close(c) => return Err(format!("closed during sync: {c:?}")),
            _ => continue,
        };
        match (b.first(), b.get(1)) {
            // An empty SyncStep2 (the update of an empty document is [0, 0]).
            (Some(0), Some(0)) => ws
                .send(WsMessage::Binary(frame(0, Some(1), &[0, 0])))
                .await
                .map_err(|e| format!("send step2: {e}"))?,
            (Some(0), Some(1)) => return Ok(ws),
            _ => {}
        }
    }
}

/// Opens `urls` with at most `parallel` handshakes at a time; returns each connection with
/// its connect+sync time, in order. Prints progress on long runs.
async fn connect_all(
    urls: Vec<(String, Option<Bytes>)>,
    parallel: usize,
    deadline: Instant,
) -> Result<Vec<(Ws, Duration)>, String> {
    let total = urls.len();
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(total);
    for (url, aw) in urls {
        let sem = sem.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.map_err(|e| e.to_string())?;
            let t = Instant::now();
            let ws = tokio::time::timeout(CONNECT_TIMEOUT, connect(&url, aw))
                .await
                .map_err(|_| format!("connect {url}: timed out"))??;
            done.fetch_add(1, Ordering::Relaxed);
            Ok::<_, String>((ws, t.elapsed()))
        }));
    }
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                eprintln!(
                    "[load] {:5.1} s  connected {}/{}",
                    start.elapsed().as_secs_f64(),
                    done.load(Ordering::Relaxed),
                    total
                );
            }
        })
    };
    let mut out = Vec::with_capacity(total);
    let mut err = None;
    for t in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, t).await {
            Ok(Ok(Ok(c))) => out.push(c),
            Ok(Ok(Err(e))) => {
                err.get_or_insert(e);
            }
            Ok(Err(e)) => {
                err.get_or_insert(e.to_string());
            }
            Err(_) => {
                err.get_or_insert("run timed out while connecting".into());
                break;
            }
        }
    }
    progress.abort();
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

// ---------------------------------------------------------------------------------------------
// Traffic mode

/// Per-room flow control and counters.
struct RoomFlow {
    /// Updates sent by the room's writers.
    sent: AtomicU64,
    /// Deliveries to the room's receivers.
    delivered: AtomicU64,
    /// Receivers per update (those of the room other than its writer).
    per_update: u64,
    waiting: AtomicUsize,
    notify: tokio::sync::Notify,
}

impl RoomFlow {
    fn ahead(&self) -> u64 {
        let sent = self.sent.load(Ordering::Acquire) * self.per_update;
        sent.saturating_sub(self.delivered.load(Ordering::Acquire)) / self.per_update.max(1)
    }

    async fn wait_below(&self, window: u64, deadline: Instant) {
        while self.per_update > 0 && self.ahead() >= window && Instant::now() < deadline {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.waiting.fetch_add(1, Ordering::AcqRel);
            if self.ahead() >= window {
                let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
            }
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Shared state of a traffic run.
struct Shared {
    base: Instant,
    updates: usize,
    /// Send time of (writer, seq), micros since `base` + 1 (0: not sent).
    sent_at: Vec<AtomicU64>,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    last_delivery_us: AtomicU64,
    closed: Mutex<Vec<String>>,
    stop: AtomicBool,
}

fn now_us(base: Instant) -> u64 {
    base.elapsed().as_micros() as u64
}

struct Receiver {
    /// Global index of the room's first writer and the room's writer count.
    writer_base: u32,
    writers: u32,
    /// This connection's own writer index (its echo is not a delivery).
    own: Option<u32>,
    flow: Arc<RoomFlow>,
}

async fn reader_task(mut stream: SplitStream<Ws>, r: Receiver, shared: Arc<Shared>) -> Vec<u32> {
    let u = shared.updates;
    let mut seen = vec![0u64; (r.writers as usize * u).div_ceil(64)];
    let mut lat = Vec::new();
    while let Some(msg) = stream.next().await {
        let b = match msg {
            Ok(WsMessage::Binary(b)) => b,
            Ok(WsMessage::Close(c)) => {
                if !shared.stop.load(Ordering::Relaxed) {
                    let mut closed = shared.closed.lock().unwrap_or_else(|e| e.into_inner());
                    closed.push(format!("closed by server: {c:?}"));
                }
                break;
            }
            Ok(_) => continue,
            Err(e) => {
                if !shared.stop.load(Ordering::Relaxed) {
                    let mut closed = shared.closed.lock().unwrap_or_else(|e| e.into_inner());
                    closed.push(format!("read error: {e}"));
                }
                break;
            }
        };
        if b.first() != Some(&0) || !matches!(b.get(1), Some(1) | Some(2)) {
            continue;
        }
        let now = now_us(shared.base);
        let mut got = 0;
        markers(&b, |w, s| {
            if w < r.writer_base || w >= r.writer_base + r.writers || Some(w) == r.own {
                return;
            }
            if s as usize >= u {
                return;
            }
            let bit = (w - r.writer_base) as usize * u + s as usize;
            if seen[bit / 64] & (1 << (bit % 64)) != 0 {
                shared.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
            seen[bit / 64] |= 1 << (bit % 64);
            got += 1;
            let sent = shared.sent_at[w as usize * u + s as usize].load(Ordering::Acquire);
            if sent > 0 {
                lat.push(now.saturating_sub(sent - 1).min(u32::MAX as u64) as u32);
            }
        });
        if got > 0 {
            shared.delivered.fetch_add(got, Ordering::AcqRel);
            shared.last_delivery_us.fetch_max(now, Ordering::AcqRel);
            r.flow.delivered.fetch_add(got, Ordering::AcqRel);
            if r.flow.waiting.load(Ordering::Acquire) > 0 {
                r.flow.notify.notify_waiters();
            }
        }
    }
    lat
}

struct Writer {
    index: u32,
    frames: Vec<Bytes>,
    flow: Arc<RoomFlow>,
}

/// When a writer sends: the schedule shared by every writer of a run.
#[derive(Clone, Copy)]
struct Pace {
    total_writers: usize,
    /// Aggregate updates per second; 0 = flat out within `window`.
    rate: f64,
    window: u64,
    t0: Instant,
    deadline: Instant,
}

async fn writer_task(
    mut sink: SplitSink<Ws, WsMessage>,
    w: Writer,
    pace: Pace,
    shared: Arc<Shared>,
) -> (SplitSink<Ws, WsMessage>, Result<(), String>) {
    let Pace {
        total_writers,
        rate,
        window,
        t0,
        deadline,
    } = pace;
    let u = shared.updates;
    for (k, f) in w.frames.into_iter().enumerate() {
        if Instant::now() >= deadline {
            return (sink, Err("run timed out while sending".into()));
        }
        if rate > 0.0 {
            let at = (k * total_writers + w.index as usize) as f64 / rate;
            tokio::time::sleep_until((t0 + Duration::from_secs_f64(at)).into()).await;
        } else {
            w.flow.wait_below(window, deadline).await;
        }
        w.flow.sent.fetch_add(1, Ordering::AcqRel);
        shared.sent_at[w.index as usize * u + k].store(now_us(shared.base) + 1, Ordering::Release);
        if let Err(e) = sink.send(WsMessage::Binary(f)).await {
            return (sink, Err(format!("send update: {e}")));
        }
    }
    (sink, Ok(()))
}

/// The pre-encoded updates of one writer: `count` inserts of `size` bytes at the end of its
/// run in the text `t`, a new run at the top every `paragraph` inserts (0: one run), each
/// starting with its marker.
fn encode_updates(
    index: u32,
    client: u64,
    count: usize,
    size: usize,
    paragraph: usize,
) -> Vec<Bytes> {
    let doc = Doc::with_client_id(client);
    let text = doc.get_or_insert_text("t");
    let pad = "x".repeat(size - MARK_LEN);
    let mut cursor = 0u32;
    (0..count)
        .map(|k| {
            if paragraph > 0 && k.is_multiple_of(paragraph) {
                cursor = 0; // a new paragraph at the top of the text
            }
            let s = format!("{}{pad}", marker(index, k as u32));
            let update = {
                let mut txn = doc.transact_mut();
                text.insert(&mut txn, cursor, &s);
                txn.encode_update_v1()
            };
            cursor += s.len() as u32;
            frame(0, Some(2), &update)
        })
        .collect()
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64
}

fn dur_pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn room_names(n: usize) -> Vec<String> {
    let tag: u32 = rand::random();
    (0..n).map(|r| format!("lg{tag:08x}-{r}")).collect()
}

fn url_for(template: &str, room: &str) -> String {
    template.replace("{room}", room)
}

/// Samples the server's RSS every 100 ms (peak) and prints a progress line every 2 s.
fn monitor(
    pids: Vec<u32>,
    shared: Arc<Shared>,
    expected: u64,
) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let peak = Arc::new(AtomicU64::new(server_rss(&pids).unwrap_or(0)));
    let p = peak.clone();
    let task = tokio::spawn(async move {
        let start = Instant::now();
        let mut last = (start, 0u64);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut n = 0u64;
        loop {
            tick.tick().await;
            if let Some(rss) = server_rss(&pids) {
                p.fetch_max(rss, Ordering::Relaxed);
            }
            n += 1;
            if n.is_multiple_of(20) {
                let d = shared.delivered.load(Ordering::Relaxed);
                let rate = (d - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), d);
                let closed = shared
                    .closed
                    .lock()
                    .map(|c| c.len())
                    .unwrap_or_else(|e| e.into_inner().len());
                eprintln!(
                    "[load] {:5.1} s  delivered {d}/{expected} ({:.0}%)  {:.0}/s  closed {closed}",
                    start.elapsed().as_secs_f64(),
                    100.0 * d as f64 / expected.max(1) as f64,
                    rate
                );
            }
        }
    });
    (peak, task)
}

/// RSS once it stops falling (at most `limit`), after the clients left.
async fn settled_rss(pids: &[u32], limit: Duration) -> Option<u64> {
    let end = Instant::now() + limit;
    let mut last = server_rss(pids)?;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = server_rss(pids)?;
        if now >= last {
            return Some(now);
        }
        last = now;
    }
    Some(last)
}

async fn traffic(o: Opts) -> Result<serde_json::Value, String> {
    let deadline = Instant::now() + o.timeout;
    let rooms = room_names(o.rooms);
    let writers_per_room = o.writers.unwrap_or(o.clients).min(if o.read_url.is_some() {
        usize::MAX
    } else {
        o.clients
    });
    let separate_readers = o.read_url.is_some();
    let total_writers = writers_per_room * o.rooms;
    if let Some(create) = &o.create {
        for r in &rooms {
            create_room(create, r).await?;
        }
    }
    let cpu_before = server_cpu(&o.pids);
    let rss_before = server_rss(&o.pids);
    let client_base: u64 = (rand::random::<u32>() >> 2) as u64 + 1;

    // Connections, room by room: writers first (on --url), then the receivers.
    let mut urls = Vec::new();
    // (room, writer index or None, is receiver)
    let mut roles: Vec<(usize, Option<u32>, bool)> = Vec::new();
    for (ri, room) in rooms.iter().enumerate() {
        let conns = if separate_readers {
            writers_per_room + o.clients
        } else {
            o.clients
        };
        for c in 0..conns {
            let writer = (c < writers_per_room).then(|| (ri * writers_per_room + c) as u32);
            let (url, receiver) = match (&o.read_url, writer) {
                (Some(read), None) => (url_for(read, room), true),
                (Some(_), Some(_)) => (url_for(&o.url, room), false),
                (None, _) => (url_for(&o.url, room), true),
            };
            urls.push((url, None));
            roles.push((ri, writer, receiver));
        }
    }
    let receivers_per_room = o.clients as u64;
    let per_update = if separate_readers {
        receivers_per_room
    } else {
        receivers_per_room.saturating_sub(1)
    };
    let flows: Vec<Arc<RoomFlow>> = (0..o.rooms)
        .map(|_| {
            Arc::new(RoomFlow {
                sent: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                per_update,
                waiting: AtomicUsize::new(0),
                notify: tokio::sync::Notify::new(),
            })
        })
        .collect();
    let expected = total_writers as u64 * o.updates as u64 * per_update;

    let connect_started = Instant::now();
    let conns = connect_all(urls, o.parallel, deadline).await?;
    let connect_wall = connect_started.elapsed();
    let cpu_connected = server_cpu(&o.pids);
    let rss_connected = server_rss(&o.pids);
    let mut connect_times: Vec<Duration> = conns.iter().map(|c| c.1).collect();
    connect_times.sort();

    eprintln!("[load] encoding {total_writers} x {} updates", o.updates);
    let shared = Arc::new(Shared {
        base: Instant::now(),
        updates: o.updates,
        sent_at: (0..total_writers * o.updates)
            .map(|_| AtomicU64::new(0))
            .collect(),
        delivered: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        last_delivery_us: AtomicU64::new(0),
        closed: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    let mut idle_sinks = Vec::new();
    let mut plans = VecDeque::new();
    for (&(ri, writer, receiver), (ws, _)) in roles.iter().zip(conns) {
        let (sink, stream) = ws.split();
        if receiver {
            readers.push(tokio::spawn(reader_task(
                stream,
                Receiver {
                    writer_base: (ri * writers_per_room) as u32,
                    writers: writers_per_room as u32,
                    own: writer,
                    flow: flows[ri].clone(),
                },
                shared.clone(),
            )));
        } else {
            // Writers on another node than the receivers: drain what they get.
            tokio::spawn(async move {
                let mut stream = stream;
                while let Some(Ok(_)) = stream.next().await {}
            });
        }
        match writer {
            Some(w) => plans.push_back((
                sink,
                Writer {
                    index: w,
                    frames: encode_updates(
                        w,
                        client_base + w as u64,
                        o.updates,
                        o.size,
                        o.paragraph,
                    ),
                    flow: flows[ri].clone(),
                },
            )),
            None => idle_sinks.push(sink),
        }
    }
    let (peak, mon) = monitor(o.pids.clone(), shared.clone(), expected);
    let machine_start = machine_cpu();
    let own_start = own_cpu();
    let cpu_start = server_cpu(&o.pids);
    let t0 = Instant::now();
    let t0_us = now_us(shared.base);
    for (sink, w) in plans {
        let pace = Pace {
            total_writers,
            rate: o.rate,
            window: o.window,
            t0,
            deadline,
        };
        writers.push(tokio::spawn(writer_task(sink, w, pace, shared.clone())));
    }
    let mut errors = Vec::new();
    for w in writers {
        match w.await {
            Ok((sink, r)) => {
                idle_sinks.push(sink);
                if let Err(e) = r {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    let send_secs = t0.elapsed().as_secs_f64();
    // Wait for every delivery, or until none came for `drain`.
    let mut last = (Instant::now(), shared.delivered.load(Ordering::Acquire));
    loop {
        let d = shared.delivered.load(Ordering::Acquire);
        if d >= expected || Instant::now() >= deadline {
            break;
        }
        if d != last.1 {
            last = (Instant::now(), d);
        } else if last.0.elapsed() >= o.drain {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu_end = server_cpu(&o.pids);
    let own_end = own_cpu();
    let machine_end = machine_cpu();
    let delivered = shared.delivered.load(Ordering::Acquire);
    let last_us = shared.last_delivery_us.load(Ordering::Acquire);
    let active = (last_us.saturating_sub(t0_us) as f64 / 1e6).max(1e-6);
    mon.abort();
    let rss_peak = peak.load(Ordering::Relaxed);

    shared.stop.store(true, Ordering::Relaxed);
    for mut s in idle_sinks {
        let _ = tokio::time::timeout(Duration::from_secs(1), s.send(WsMessage::Close(None))).await;
    }
    let mut lat: Vec<u32> = Vec::with_capacity(delivered as usize);
    for r in readers {
        if let Ok(Ok(l)) = tokio::time::timeout(Duration::from_secs(5), r).await {
            lat.extend(l);
        }
    }
    lat.sort_unstable();
    let rss_after = settled_rss(&o.pids, Duration::from_secs(3)).await;
    let closed = shared
        .closed
        .lock()
        .map(|c| c.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    let cpu = cpu_between(cpu_start, cpu_end);
    let wall = active.max(1e-6);
    let machine_busy = machine_end - machine_start;
    let own = own_end - own_start;
    Ok(serde_json::json!({
        "label": o.label,
        "mode": "traffic",
        "rooms": o.rooms,
        "clients": o.clients,
        "writers_per_room": writers_per_room,
        "updates": o.updates,
        "size": o.size,
        "paragraph": o.paragraph,
        "rate": o.rate,
        "connections": roles.len(),
        "connect_wall_s": connect_wall.as_secs_f64(),
        "connect_ms_p50": dur_pct(&connect_times, 0.5),
        "connect_ms_p99": dur_pct(&connect_times, 0.99),
        "connect_ms_max": dur_pct(&connect_times, 1.0),
        "connect_server_cpu_s": cpu_between(cpu_before, cpu_connected),
        "expected": expected,
        "delivered": delivered,
        "missing": expected.saturating_sub(delivered),
        "duplicates": shared.duplicates.load(Ordering::Relaxed),
        "send_s": send_secs,
        "active_s": wall,
        "deliveries_per_s": delivered as f64 / wall,
        "latency_ms_p50": pct(&lat, 0.5) / 1000.0,
        "latency_ms_p99": pct(&lat, 0.99) / 1000.0,
        "latency_ms_max": pct(&lat, 1.0) / 1000.0,
        "server_cpu_s": cpu,
        "server_cpu_us_per_delivery": cpu.map(|c| c * 1e6 / delivered.max(1) as f64),
        "generator_cpu_s": own,
        "other_cpu_s": (machine_busy - own - cpu.unwrap_or(0.0)).max(0.0),
        "rss_kb_before": rss_before,
        "rss_kb_connected": rss_connected,
        "rss_kb_peak": rss_peak,
        "rss_kb_after": rss_after,
        "closed_early": closed.len(),
        "closed_first": closed.first(),
        "errors": errors,
    }))
}

// ---------------------------------------------------------------------------------------------
// Idle mode

async fn idle(o: Opts, n: usize) -> Result<serde_json::Value, String> {
    let deadline = Instant::now() + o.timeout;
    let rooms = room_names(o.rooms);
    if n < o.rooms * 2 {
        return Err("--idle needs at least two connections per room".into());
    }
    if let Some(create) = &o.create {
        for r in &rooms {
            create_room(create, r).await?;
        }
    }
    let client_base: u64 = (rand::random::<u32>() >> 2) as u64 + 1;
    let url = |i: usize| {
        let room = &rooms[i % o.rooms];
        (
            url_for(&o.url, room),
            Some(awareness_frame(client_base + i as u64, &format!("u{i}"))),
        )
    };
    let keep = |conns: Vec<(Ws, Duration)>, into: &mut Vec<tokio::task::JoinHandle<()>>| {
        for (ws, _) in conns {
            into.push(tokio::spawn(async move {
                let mut ws = ws;
                while let Some(Ok(m)) = ws.next().await {
                    if matches!(m, WsMessage::Close(_)) {
                        break;
                    }
                }
            }));
        }
    };
    let mut held = Vec::new();
    let rss0 = server_rss(&o.pids);
    let cpu0 = server_cpu(&o.pids);
    let t = Instant::now();
    let first = connect_all((0..o.rooms).map(url).collect(), o.parallel, deadline).await?;
    let mut times: Vec<Duration> = first.iter().map(|c| c.1).collect();
    keep(first, &mut held);
    tokio::time::sleep(o.settle).await;
    let rss1 = server_rss(&o.pids);
    let second = connect_all((o.rooms..n).map(url).collect(), o.parallel, deadline).await?;
    times.extend(second.iter().map(|c| c.1));
    let connect_wall = t.elapsed() - o.settle;
    keep(second, &mut held);
    tokio::time::sleep(o.settle).await;
    let rss2 = server_rss(&o.pids);
    let cpu1 = server_cpu(&o.pids);
    // Everything open: count the ones the server closed meanwhile.
    let closed = held.iter().filter(|h| h.is_finished()).count();
    for h in &held {
        h.abort();
    }
    drop(held);
    let rss_after = settled_rss(&o.pids, Duration::from_secs(5)).await;
    times.sort();
    let (per_conn, per_room) = match (rss0, rss1, rss2) {
        (Some(a), Some(b), Some(c)) => {
            let per_conn = (c as f64 - b as f64) / (n - o.rooms) as f64;
            let per_room = (b as f64 - a as f64) / o.rooms as f64 - per_conn;
            (Some(per_conn), Some(per_room))
        }
        _ => (None, None),
    };
    Ok(serde_json::json!({
        "label": o.label,
        "mode": "idle",
        "rooms": o.rooms,
        "connections": n,
        "connect_wall_s": connect_wall.as_secs_f64(),
        "connect_ms_p50": dur_pct(&times, 0.5),
        "connect_ms_p99": dur_pct(&times, 0.99),
        "connect_ms_max": dur_pct(&times, 1.0),
        "rss_kb_before": rss0,
        "rss_kb_rooms_open": rss1,
        "rss_kb_all_open": rss2,
        "rss_kb_after": rss_after,
        "kb_per_connection": per_conn,
        "kb_per_room": per_room,
        "server_cpu_s": cpu_between(cpu0, cpu1),
        "closed_early": closed,
    }))
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let o = parse_args();
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.threads)
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(&format!("runtime: {e}")));
    let result = rt.block_on(async move {
        match o.idle {
            Some(n) => idle(o, n).await,
            None => traffic(o).await,
        }
    });
    match result {
        Ok(v) => {
            if let Some(map) = v.as_object() {
                for (k, val) in map {
                    println!("{k:>28}  {val}");
                }
            }
            println!("RESULT {v}");
            let failed = v["missing"].as_u64().unwrap_or(0) > 0
                || v["closed_early"].as_u64().unwrap_or(0) > 0
                || v["errors"].as_array().is_some_and(|e| !e.is_empty());
            // Shut down without waiting for tasks still holding sockets.
            rt.shutdown_timeout(Duration::from_millis(100));
            std::process::exit(if failed { 1 } else { 0 });
        }
        Err(e) => {
            eprintln!("load: {e}");
            println!(
                "RESULT {}",
                serde_json::json!({"error": e, "mode": "failed"})
            );
            rt.shutdown_timeout(Duration::from_millis(100));
            std::process::exit(1);
        }
    }
}
