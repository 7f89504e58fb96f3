//! The read side of the store: a fixed pool of reader threads, each owning one read-only
//! SQLite connection, fed from one queue.
//!
//! Reads (`load`, `list`, `meta`, ...) used to run on tokio's blocking pool with a shared
//! set of pooled connections. A burst of room loads (a thousand clients opening a thousand
//! rooms) then grew the blocking pool by a thread per overlapping load and opened a
//! connection for each read beyond the pool; every such thread kept its stack and its
//! allocator arena after the burst, about 4 kB per room opened in it. Here the threads and
//! connections are fixed ([`crate::store::StoreOptions::max_idle_readers`], default 2),
//! created when the store opens, and a read waits in the queue when all are busy.
//!
//! A job gets its thread's connection (opened on first use; reopened after a job left a
//! transaction open or the open failed) and answers through a oneshot channel. The threads
//! exit when the pool is closed or dropped, after the jobs already queued.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::schema;
use crate::store::{StoreError, StoreOptions};

/// One read: called on a reader thread with its connection (or the error opening it).
type Job = Box<dyn FnOnce(Result<&mut Connection, StoreError>) + Send>;

/// The reader threads and their queue.
pub(super) struct ReaderPool {
    /// `None` once closed: the threads finish what is queued and exit.
    queue: Mutex<Option<Sender<Job>>>,
    /// Read connections opened so far.
    opened: Arc<AtomicU64>,
    /// The reader threads, joined by [`ReaderPool::close`].
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl ReaderPool {
    /// Starts `opts.max_idle_readers` (at least one) reader threads on `db_path`; the first
    /// takes `first`, a connection the caller opened already.
    pub(super) fn start(
        db_path: PathBuf,
        opts: &StoreOptions,
        first: Connection,
    ) -> Result<ReaderPool, StoreError> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let opened = Arc::new(AtomicU64::new(1));
        let mut first = Some(first);
        let mut threads = Vec::new();
        for i in 0..opts.max_idle_readers.max(1) {
            let reader = Reader {
                conn: first.take(),
                db_path: db_path.clone(),
                opts: opts.clone(),
                opened: Arc::clone(&opened),
            };
            let rx = Arc::clone(&rx);
            let thread = std::thread::Builder::new()
                .name(format!("ymesh-store-reader-{i}"))
                .spawn(move || reader.run(&rx))
                .map_err(|e| {
                    StoreError::Internal(format!("cannot start a store reader thread: {e}"))
                })?;
            threads.push(thread);
        }
        Ok(ReaderPool {
            queue: Mutex::new(Some(tx)),
            opened,
            threads: Mutex::new(threads),
        })
    }

    /// Read connections opened since the pool started.
    pub(super) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// No more reads: the threads finish the queued jobs, close their connections and exit;
    /// this waits for them (blocking: call it off the async runtime), so no connection to
    /// the database is left open when it returns.
    pub(super) fn close(&self) {
        locked(&self.queue).take();
        let threads = std::mem::take(&mut *locked(&self.threads));
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a store reader thread panicked");
            }
        }
    }

    /// Runs `f` on a reader thread with its connection.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(conn.and_then(f));
        });
        {
            let queue = locked(&self.queue);
            let sender = queue.as_ref().ok_or(StoreError::Closed)?;
            sender.send(job).map_err(|_| StoreError::Closed)?;
        }
        answer
            .await
            .map_err(|_| StoreError::Internal("a store read failed (its reader panicked)".into()))?
    }
}

/// One reader thread's state.
struct Reader {
    conn: Option<Connection>,
    db_path: PathBuf,
    opts: StoreOptions,
    opened: Arc<AtomicU64>,
}

impl Reader {
    fn run(mut self, rx: &Mutex<Receiver<Job>>) {
        loop {
            // The lock is held only while waiting for the next job, never while running one.
            let job = match locked(rx).recv() {
                Ok(job) => job,
                Err(_) => return,
            };
            let conn = match self.conn.take() {
                Some(c) => Ok(c),
                None => schema::open_reader(&self.db_path, &self.opts).inspect(|_| {
                    self.opened.fetch_add(1, Ordering::Relaxed);
                }),
            };
            match conn {
                Ok(mut c) => {
                    let ran = catch_unwind(AssertUnwindSafe(|| job(Ok(&mut c))));
                    // A job that panicked or left a transaction open: start afresh next time.
                    if ran.is_ok() && c.is_autocommit() {
                        self.conn = Some(c);
                    }
                }
                Err(e) => {
                    let _ = catch_unwind(AssertUnwindSafe(|| job(Err(e))));
                }
            }
        }
    }
}

/// Locks `m`, ignoring poisoning (a job runs outside every lock here).
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
