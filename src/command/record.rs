//! Aggregation of results on the issuing node: one [`CommandRecord`] per command issued here,
//! kept in a bounded [`CommandLog`].

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{json, Value};

use super::envelope::{Command, CommandResult, ResponderKind, ResultStatus};

/// Default number of records a [`CommandLog`] keeps.
pub const DEFAULT_LOG_CAPACITY: usize = 1_000;

/// What [`CommandRecord::record`] did with a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// First answer from this responder: stored.
    Recorded,
    /// The responder had been marked `timeout`; its late answer replaced the timeout.
    ReplacedTimeout,
    /// The responder had already answered; the first answer is kept.
    Duplicate,
    /// The result is for another command (or, in a [`CommandLog`], for none it knows).
    UnknownCommand,
}

/// The state of one command issued by this node: who is expected to answer, who did, and
/// whether it is finished.
///
/// Pure: the caller passes the time in. The node adds an expected responder for each client it
/// sends the command to and each peer node it forwards it to ([`CommandRecord::expect`]),
/// calls [`CommandRecord::seal`] once the fan-out is complete, feeds results in with
/// [`CommandRecord::record`], and calls [`CommandRecord::tick`] at or after the deadline.
///
/// The record is **done** when it is sealed and every expected responder has answered, or when
/// the deadline has been processed by `tick` (missing answers become `timeout`). Results from
/// responders that were not expected (clients of other nodes, relayed back) are recorded too.
/// A result arriving after its responder was marked `timeout` replaces the timeout: the
/// record shows what finally happened.
#[derive(Debug, Clone)]
pub struct CommandRecord {
    command: Command,
    expected: BTreeMap<String, ResponderKind>,
    results: BTreeMap<String, CommandResult>,
    /// Peers linked when the command was issued whose share policy leaves its room out:
    /// the command does not go to them.
    not_shared: Vec<String>,
    sealed: bool,
    timed_out: bool,
}

impl CommandRecord {
    /// A record for `command`, with no expected responders yet.
    pub fn new(command: Command) -> Self {
        CommandRecord {
            command,
            expected: BTreeMap::new(),
            results: BTreeMap::new(),
            not_shared: Vec::new(),
            sealed: false,
            timed_out: false,
        }
    }

    /// The command.
    pub fn command(&self) -> &Command {
        &self.command
    }

    /// The command's id.
    pub fn id(&self) -> &str {
        &self.command.id
    }

    /// Expects an answer from `responder`. Adding one already expected changes nothing.
    /// Ignored after the deadline was processed.
    pub fn expect(&mut self, responder: impl Into<String>, kind: ResponderKind) {
        if self.timed_out {
            return;
        }
        self.expected.entry(responder.into()).or_insert(kind);
    }

    /// Notes a linked peer the command does not go to, because its share policy leaves the
    /// command's room out (shown in `not_shared`, so that nobody waits for it).
    pub fn not_shared_with(&mut self, peer: impl Into<String>) {
        let peer = peer.into();
        if !self.not_shared.contains(&peer) {
            self.not_shared.push(peer);
        }
    }

    /// Says the fan-out is complete: no more expected responders will be added, so the record
    /// is done as soon as all of them answered (or at once if there are none).
    pub fn seal(&mut self) {
        self.sealed = true;
    }

    /// Stores a result. See [`RecordOutcome`].
    pub fn record(&mut self, result: CommandResult) -> RecordOutcome {
        if result.id != self.command.id {
            return RecordOutcome::UnknownCommand;
        }
        match self.results.get(&result.responder) {
            Some(existing) if existing.status == ResultStatus::Timeout => {
                self.results.insert(result.responder.clone(), result);
                RecordOutcome::ReplacedTimeout
            }
            Some(_) => RecordOutcome::Duplicate,
            None => {
                self.results.insert(result.responder.clone(), result);
                RecordOutcome::Recorded
            }
        }
    }

    /// At or after the deadline, marks every expected responder without an answer `timeout`
    /// (with `at_ms` = the deadline) and makes the record done. Returns `true` if this call
    /// changed the record.
    pub fn tick(&mut self, now_ms: u64) -> bool {
        if self.timed_out || now_ms < self.command.deadline_ms {
            return false;
        }
        self.timed_out = true;
        let missing: Vec<(String, ResponderKind)> = self
            .expected
            .iter()
            .filter(|(responder, _)| !self.results.contains_key(*responder))
            .map(|(responder, kind)| (responder.clone(), *kind))
            .collect();
        for (responder, kind) in missing {
            let timeout = CommandResult::for_command(
                &self.command,
                responder.clone(),
                kind,
                ResultStatus::Timeout,
                Value::Null,
                self.command.deadline_ms,
            );
            self.results.insert(responder, timeout);
        }
        true
    }

    /// Whether the record is finished (see the type's docs).
    pub fn is_done(&self) -> bool {
        self.timed_out || (self.sealed && self.pending().next().is_none())
    }

    /// Expected responders that have not answered yet.
    pub fn pending(&self) -> impl Iterator<Item = &str> {
        self.expected
            .keys()
            .filter(|responder| !self.results.contains_key(*responder))
            .map(String::as_str)
    }

    /// Results recorded so far (including synthesized timeouts), ordered by responder.
    pub fn results(&self) -> impl Iterator<Item = &CommandResult> {
        self.results.values()
    }

    /// Number of results per status; every status is present, with 0 when none.
    pub fn counts(&self) -> BTreeMap<ResultStatus, usize> {
        let mut counts: BTreeMap<ResultStatus, usize> =
            ResultStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for result in self.results.values() {
            *counts.entry(result.status).or_insert(0) += 1;
        }
        counts
    }

    /// The body of `GET /commands/{id}`:
    ///
    /// ```json
    /// {"id":"n1-b1-1","kind":"compact","room":"notes","args":{},"origin":"n1",
    ///  "issued_ms":1000,"deadline_ms":31000,"done":true,
    ///  "results":[{"id":"n1-b1-1","responder":"42","responder_kind":"client",...}],
    ///  "pending":[],
    ///  "counts":{"ok":1,"error":0,"refused":0,"unsupported":0,"timeout":0}}
    /// ```
    ///
    /// plus `"not_shared": [node ids]` when linked peers were left out by their share policy.
    pub fn to_json(&self) -> Value {
        let counts: serde_json::Map<String, Value> = self
            .counts()
            .into_iter()
            .map(|(status, n)| (status.as_str().to_string(), Value::from(n)))
            .collect();
        let mut body = json!({
            "id": self.command.id,
            "kind": self.command.kind,
            "room": self.command.room,
            "args": self.command.args,
            "origin": self.command.origin,
            "issued_ms": self.command.issued_ms,
            "deadline_ms": self.command.deadline_ms,
            "done": self.is_done(),
            "results": self.results.values().collect::<Vec<_>>(),
            "pending": self.pending().collect::<Vec<_>>(),
            "counts": counts,
        });
        if !self.not_shared.is_empty() {
            body["not_shared"] = json!(self.not_shared);
        }
        body
    }
}

/// The last `capacity` commands issued by this node, by id; the oldest record is dropped when
/// a new one would exceed the cap. Pure: the caller passes the time in.
#[derive(Debug, Clone)]
pub struct CommandLog {
    capacity: usize,
    records: HashMap<String, CommandRecord>,
    order: VecDeque<String>,
}

impl Default for CommandLog {
    fn default() -> Self {
        CommandLog::new(DEFAULT_LOG_CAPACITY)
    }
}

impl CommandLog {
    /// An empty log keeping at most `capacity` records (at least 1).
    pub fn new(capacity: usize) -> Self {
        CommandLog {
            capacity: capacity.max(1),
            records: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Adds a record, replacing one with the same id. Returns the id of the record dropped to
    /// make room, if any.
    pub fn insert(&mut self, record: CommandRecord) -> Option<String> {
        let id = record.id().to_string();
        if self.records.insert(id.clone(), record).is_some() {
            return None;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            let oldest = self.order.pop_front()?;
            self.records.remove(&oldest);
            return Some(oldest);
        }
        None
    }

    /// The record for `id`.
    pub fn get(&self, id: &str) -> Option<&CommandRecord> {
        self.records.get(id)
    }

    /// The record for `id`, to add expected responders or results.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut CommandRecord> {
        self.records.get_mut(id)
    }

    /// Routes a result to its record.
    pub fn record(&mut self, result: CommandResult) -> RecordOutcome {
        match self.records.get_mut(&result.id) {
            Some(record) => record.record(result),
            None => RecordOutcome::UnknownCommand,
        }
    }

    /// [`CommandRecord::tick`] on every record; returns the ids of the records it changed
    /// (those whose deadline was just processed).
    pub fn tick(&mut self, now_ms: u64) -> Vec<String> {
        self.order
            .iter()
            .filter(|id| self.records.get_mut(*id).is_some_and(|r| r.tick(now_ms)))
            .cloned()
            .collect()
    }

    /// The earliest deadline among records whose deadline has not been processed yet: when the
    /// node should call [`CommandLog::tick`] next.
    pub fn next_deadline(&self) -> Option<u64> {
        self.records
            .values()
            .filter(|r| !r.timed_out)
            .map(|r| r.command.deadline_ms)
            .min()
    }

    /// Records, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &CommandRecord> {
        self.order.iter().filter_map(|id| self.records.get(id))
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}
