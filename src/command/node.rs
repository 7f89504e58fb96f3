//! The node side of maintenance commands: issuing, fan-out to opted-in clients, forwarding
//! across the mesh once per node, the node's own handlers, and aggregation of results on the
//! issuing node.
//!
//! How a command travels (docs/protocol.md, "Maintenance commands"):
//!
//! 1. **Issued** here ([`CommandCenter::issue`]): a [`CommandRecord`] in the log expects an
//!    answer from this node and from every peer linked now that shares the room (linked
//!    peers whose share policy leaves it out are listed as `not_shared`).
//! 2. **Accepted** once per node (the mesh's flood decides that for commands that arrive
//!    over links, and forwards them to every other link whose share policy allows the room
//!    while they may travel; with a store, a command is also recorded on disk so a restart
//!    does not apply it again): queued as a type-103 frame to every session of the room (or
//!    of every room) that opted in with `commands=1`; then the node acts on it and answers
//!    with its own result, which lists the clients it delivered to.
//! 3. **Results** go back the way the command came: each node remembers the link a command
//!    arrived on and sends results (its own and its clients') there; the issuing node
//!    records them. A node that delivered to clients makes the issuing node expect them, so
//!    a client that does not answer by the deadline is recorded as `timeout`.
//! 4. A node that links while a command is still running gets it then ("offline nodes
//!    receive it when they return"; the mesh replays running commands to new links).
//!
//! The center reaches links only through [`MeshLinks`] and hears from them through its
//! inbox ([`super::port`]): it does not know the mesh.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};

use super::port::{Inbound, InboxReceiver, MeshLinks, RoomScope};
use super::{
    encode_command, Command, CommandIssuer, CommandKind, CommandLog, CommandRecord, CommandResult,
    RecordOutcome, ResponderKind, ResultStatus, DEFAULT_LOG_CAPACITY,
};
use crate::room::{DeleteError, RoomRegistry, SessionId};
use crate::store::Store;

/// Results that arrive this long after a command's deadline still count before the issuing
/// node marks the missing ones `timeout` (they were on their way).
pub const RESULT_GRACE_MS: u64 = 2_000;

/// Longest deadline a command may ask for: one day.
pub const MAX_DEADLINE_S: u64 = 86_400;

/// Why a command was not issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The request is not a valid command.
    #[error("{0}")]
    Invalid(String),
}

/// A command this node knows and that has not expired.
struct Active {
    command: Command,
    /// The link it arrived on; `None` when it was issued here.
    upstream: Option<SessionId>,
    /// Local sessions it was delivered to, with the responder name each answers as.
    sessions: HashMap<SessionId, String>,
}

/// Which rooms a command may touch here: all for one issued here, else those shared with
/// the peer it came from.
type Scope = Option<Arc<dyn RoomScope>>;

fn in_scope(scope: &Scope, room: &str) -> bool {
    scope.as_ref().is_none_or(|p| p.allows(room))
}

struct State {
    log: CommandLog,
    active: HashMap<String, Active>,
    /// Schema version per room, as `migrate` recorded it (mirrors the store).
    schema: BTreeMap<String, u64>,
}

/// The node's command engine; see the module docs.
pub struct CommandCenter {
    node_id: String,
    registry: Arc<RoomRegistry>,
    mesh: Arc<dyn MeshLinks>,
    issuer: Mutex<CommandIssuer>,
    state: Mutex<State>,
    /// Tasks acting on commands; [`CommandCenter::stop`] waits for them.
    tasks: tokio_util::task::TaskTracker,
    /// The node's metrics, once attached: commands issued, delivered, results by status.
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for CommandCenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandCenter")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl CommandCenter {
    /// The engine of node `node_id` (commands it issues carry `boot`), reaching links
    /// through `mesh`. Call [`CommandCenter::load`] before serving and
    /// [`CommandCenter::run_inbox`] to hear from links.
    pub fn new(
        node_id: &str,
        boot: &str,
        registry: Arc<RoomRegistry>,
        mesh: Arc<dyn MeshLinks>,
    ) -> Arc<CommandCenter> {
        Arc::new(CommandCenter {
            node_id: node_id.to_string(),
            registry,
            mesh,
            issuer: Mutex::new(CommandIssuer::new(node_id, boot)),
            state: Mutex::new(State {
                log: CommandLog::new(DEFAULT_LOG_CAPACITY),
                active: HashMap::new(),
                schema: BTreeMap::new(),
            }),
            tasks: tokio_util::task::TaskTracker::new(),
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// Counts commands in `metrics` from now on (once; a second call is ignored).
    pub fn attach_metrics(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// The last `n` commands issued here, newest first, as `GET /commands/{id}` shows each.
    pub fn recent(&self, n: usize) -> Vec<Value> {
        let mut st = lock(&self.state);
        self.expire(&mut st, now_ms());
        let mut out: Vec<Value> = st.log.iter().map(CommandRecord::to_json).collect();
        out.reverse();
        out.truncate(n);
        out
    }

    /// Marks the expected responders that did not answer a command issued here by its
    /// deadline (and the grace after it) `timeout`, counting them in the metrics.
    fn expire(&self, st: &mut State, now: u64) {
        let expired = st.log.tick(now.saturating_sub(RESULT_GRACE_MS));
        let Some(m) = self.metrics.get() else { return };
        let timeouts = expired
            .iter()
            .filter_map(|id| st.log.get(id))
            .flat_map(CommandRecord::results)
            .filter(|r| r.status == ResultStatus::Timeout)
            .count();
        if timeouts > 0 {
            m.command_results(crate::metrics::ResultStatus::Timeout, timeouts as u64);
        }
    }

    /// Takes commands and results that arrive over links until `inbox` closes or `stop` is
    /// cancelled; meanwhile marks missed deadlines every second (so a timeout is counted when
    /// it happens, not when someone reads the command).
    pub fn run_inbox(
        self: &Arc<Self>,
        mut inbox: InboxReceiver,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut deadlines = tokio::time::interval(std::time::Duration::from_secs(1));
            deadlines.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let inbound = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = deadlines.tick() => {
                        let mut st = lock(&me.state);
                        me.expire(&mut st, now_ms());
                        continue;
                    }
                    m = inbox.recv() => m,
                };
                match inbound {
                    Some(Inbound::Command {
                        link,
                        peer,
                        scope,
                        command,
                        state_vector,
                    }) => me.accept(command, Some((link, peer)), Some(scope), state_vector),
                    Some(Inbound::Result { result, .. }) => me.route_result(result),
                    None => return,
                }
            }
        });
    }

    /// Reads the schema versions `migrate` recorded from the store.
    pub async fn load(&self) -> Result<(), crate::store::StoreError> {
        if let Some(store) = self.registry.store() {
            let versions = store.schema_versions().await?;
            lock(&self.state).schema = versions.into_iter().collect();
        }
        Ok(())
    }

    /// Waits (at most `grace`) for commands being acted on; used at shutdown, before the
    /// store closes.
    pub async fn stop(&self, grace: std::time::Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some maintenance commands were still running at shutdown");
        }
    }

    /// The schema version `migrate` recorded for `room`, if any.
    pub fn schema_version(&self, room: &str) -> Option<u64> {
        lock(&self.state).schema.get(room).copied()
    }

    /// Issues a command here: validates it, records it for aggregation and sends it on its
    /// way. `deadline_s` defaults to 30 s.
    pub fn issue(
        self: &Arc<Self>,
        kind: &str,
        room: Option<String>,
        args: Value,
        deadline_s: Option<u64>,
    ) -> Result<Command, IssueError> {
        let kind = CommandKind::parse(kind);
        if !kind.is_known() {
            return Err(IssueError::Invalid(format!(
                "unknown command kind {:?}; use migrate, reindex, compact or invalidate",
                kind.as_str()
            )));
        }
        let args = match args {
            Value::Null => json!({}),
            Value::Object(_) => args,
            _ => return Err(IssueError::Invalid("args must be a JSON object".into())),
        };
        if kind == CommandKind::Migrate && args.get("version").and_then(Value::as_u64).is_none() {
            return Err(IssueError::Invalid(
                "migrate needs args.version, the target schema version (a non-negative integer)"
                    .into(),
            ));
        }
        if kind == CommandKind::Invalidate && room.is_none() {
            return Err(IssueError::Invalid(
                "invalidate applies to one room: use POST /rooms/{room}/commands".into(),
            ));
        }
        let deadline_s = deadline_s.unwrap_or(super::DEFAULT_TIMEOUT_MS / 1000);
        if deadline_s == 0 || deadline_s > MAX_DEADLINE_S {
            return Err(IssueError::Invalid(format!(
                "deadline_s must be between 1 and {MAX_DEADLINE_S}"
            )));
        }
        let now = now_ms();
        let command = lock(&self.issuer).issue(kind, room, args, now, deadline_s * 1000);
        let mut record = CommandRecord::new(command.clone());
        record.expect(self.node_id.clone(), ResponderKind::Node);
        let shared = self.mesh.peers_for(command.room.as_deref());
        if command.room.is_some() {
            for peer in self.mesh.peers_for(None) {
                if !shared.contains(&peer) {
                    record.not_shared_with(peer);
                }
            }
        }
        for peer in shared {
            record.expect(peer, ResponderKind::Node);
        }
        // Done once everyone expected answered. Safe to seal now: this node answers only
        // after it delivered to its clients (expected then), and a peer's answer names the
        // clients it delivered to (expected when it arrives).
        record.seal();
        lock(&self.state).log.insert(record);
        if let Some(m) = self.metrics.get() {
            m.command_issued();
        }
        tracing::info!(
            id = command.id,
            kind = command.kind.as_str(),
            room = command.room.as_deref().unwrap_or("*"),
            "command issued"
        );
        self.accept(command.clone(), None, None, None);
        self.mesh.flood(&command);
        Ok(command)
    }

    /// The aggregated results of a command issued here (`GET /commands/{id}`).
    pub fn report(&self, id: &str) -> Option<Value> {
        let mut st = lock(&self.state);
        self.expire(&mut st, now_ms());
        st.log.get(id).map(CommandRecord::to_json)
    }

    /// A result a client sent on session `session` (a type-103 subtype-1 frame).
    pub fn client_result(&self, session: SessionId, json: &str) {
        let mut result = match super::decode(crate::protocol::COMMAND_SUBTYPE_RESULT, json) {
            Ok(super::CommandMessage::Result(r)) => r,
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(session, error = %e, "ignoring a malformed command result");
                return;
            }
        };
        {
            let mut st = lock(&self.state);
            let Some(active) = st.active.get_mut(&result.id) else {
                tracing::debug!(session, id = result.id, "result for an unknown command");
                return;
            };
            // Only a session the command went to answers, once, under the name the issuing
            // node expects. A client that reconnected meanwhile (an invalidate handler does)
            // answers on its new connection, under the same client id.
            let key = match active.sessions.remove(&session) {
                Some(key) => key,
                None => {
                    let moved = active
                        .sessions
                        .iter()
                        .find(|(_, k)| **k == result.responder)
                        .map(|(s, _)| *s);
                    match moved.and_then(|s| active.sessions.remove(&s)) {
                        Some(key) => key,
                        None => return,
                    }
                }
            };
            result.responder = key;
            result.responder_kind = ResponderKind::Client;
        }
        self.route_result(result);
    }

    /// Sends a result toward the issuing node, or records it here if this is that node.
    fn route_result(&self, result: CommandResult) {
        let mut st = lock(&self.state);
        let (upstream, origin) = match st.active.get(&result.id) {
            Some(a) => (a.upstream, Some(a.command.origin.clone())),
            None => {
                // Expired here; if it was issued here the log still takes a late answer.
                if st.log.get(&result.id).is_none() {
                    return;
                }
                (None, None)
            }
        };
        match upstream {
            None => {
                if let Some(record) = st.log.get_mut(&result.id) {
                    if result.responder_kind == ResponderKind::Node {
                        for key in delivered_to(&result.detail) {
                            record.expect(key, ResponderKind::Client);
                        }
                    }
                    let status = result.status.as_str();
                    let outcome = record.record(result);
                    if matches!(
                        outcome,
                        RecordOutcome::Recorded | RecordOutcome::ReplacedTimeout
                    ) {
                        if let Some(m) = self.metrics.get() {
                            m.command_result(status);
                        }
                    }
                }
            }
            Some(link) => {
                drop(st);
                if self.mesh.send_result(link, result.clone()) {
                    return;
                }
                // The link it came by is gone: a direct link to the issuing node will do.
                let direct = origin.as_deref().and_then(|o| self.mesh.link_to(o));
                if !direct.is_some_and(|l| self.mesh.send_result(l, result)) {
                    tracing::debug!(link, "result dropped: no link towards the issuing node");
                }
            }
        }
    }

    /// Accepts a command (issued here, or from `link`; the mesh let each through once).
    fn accept(
        self: &Arc<Self>,
        command: Command,
        from: Option<(SessionId, String)>,
        scope: Scope,
        peer_sv: Option<Vec<u8>>,
    ) {
        let now = now_ms();
        {
            let mut st = lock(&self.state);
            let grace = RESULT_GRACE_MS;
            st.active
                .retain(|_, a| a.command.deadline_ms.saturating_add(grace) > now);
            if now >= command.deadline_ms || st.active.contains_key(&command.id) {
                return;
            }
            st.active.insert(
                command.id.clone(),
                Active {
                    command: command.clone(),
                    upstream: from.as_ref().map(|(l, _)| *l),
                    sessions: HashMap::new(),
                },
            );
        }
        let me = self.clone();
        self.tasks
            .spawn(async move { me.run(command, from, scope, peer_sv).await });
    }

    async fn run(
        self: Arc<Self>,
        command: Command,
        from: Option<(SessionId, String)>,
        scope: Scope,
        peer_sv: Option<Vec<u8>>,
    ) {
        // Applied before a restart: nothing to do again.
        if let Some(store) = self.registry.store() {
            match store
                .mark_command_applied(&command.id, command.deadline_ms)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(id = command.id, "command applied before; not again");
                    return;
                }
                Err(e) => tracing::warn!(id = command.id, error = %e, "cannot record the command"),
            }
        }
        tracing::info!(
            id = command.id,
            kind = command.kind.as_str(),
            room = command.room.as_deref().unwrap_or("*"),
            from = from.as_ref().map_or("here", |(_, p)| p.as_str()),
            "command accepted"
        );
        let delivered = self.deliver(&command, &scope);
        let (status, mut detail) = self.act(&command, from.as_ref(), &scope, peer_sv).await;
        if let Value::Object(map) = &mut detail {
            map.insert("delivered_to".into(), json!(delivered));
        }
        let result = CommandResult::for_command(
            &command,
            self.node_id.clone(),
            ResponderKind::Node,
            status,
            detail,
            now_ms(),
        );
        self.route_result(result);
    }

    /// Queues the command for every opted-in session of its room (or of every room).
    fn deliver(&self, command: &Command, scope: &Scope) -> Vec<String> {
        let frame = encode_command(command);
        let rooms: Vec<_> = match &command.room {
            Some(r) => self.registry.get(r).into_iter().collect(),
            None => self.registry.rooms(),
        };
        let rooms = rooms.into_iter().filter(|r| in_scope(scope, r.name()));
        // The last 8 characters of the node id name the node in a session key.
        let short = &self.node_id[self.node_id.len().saturating_sub(8)..];
        let mut keys = Vec::new();
        let mut st = lock(&self.state);
        let issued_here = st
            .active
            .get(&command.id)
            .is_some_and(|a| a.upstream.is_none());
        for room in rooms {
            for d in room.deliver_command(&frame) {
                let key = match d.client {
                    Some(c) => c.to_string(),
                    None => format!("session-{}@{short}", d.session),
                };
                if let Some(a) = st.active.get_mut(&command.id) {
                    a.sessions.insert(d.session, key.clone());
                }
                keys.push(key);
            }
        }
        if let Some(m) = self.metrics.get() {
            m.commands_delivered(keys.len() as u64);
        }
        if issued_here {
            if let Some(record) = st.log.get_mut(&command.id) {
                for k in &keys {
                    record.expect(k.clone(), ResponderKind::Client);
                }
            }
        }
        keys
    }

    /// The node's own handler; returns the status and a detail object.
    async fn act(
        &self,
        command: &Command,
        from: Option<&(SessionId, String)>,
        scope: &Scope,
        peer_sv: Option<Vec<u8>>,
    ) -> (ResultStatus, Value) {
        let store = self.registry.store().cloned();
        match &command.kind {
            CommandKind::Compact => match store {
                None => no_store(),
                Some(store) => compact(&*store, command.room.as_deref(), scope).await,
            },
            CommandKind::Reindex => match store {
                None => no_store(),
                Some(store) => {
                    reindex(&self.registry, &*store, command.room.as_deref(), scope).await
                }
            },
            CommandKind::Migrate => self.migrate(command, store, scope).await,
            CommandKind::Invalidate => self.invalidate(command, from, peer_sv).await,
            CommandKind::Other(kind) => (
                ResultStatus::Unsupported,
                json!({ "message": format!("command kind {kind:?} is not supported") }),
            ),
        }
    }

    async fn migrate(
        &self,
        command: &Command,
        store: Option<Arc<dyn Store>>,
        scope: &Scope,
    ) -> (ResultStatus, Value) {
        let Some(version) = command.args.get("version").and_then(Value::as_u64) else {
            return (
                ResultStatus::Error,
                json!({ "message": "args.version is missing or not a non-negative integer" }),
            );
        };
        let rooms: Vec<String> = match &command.room {
            Some(r) => vec![r.clone()],
            None => {
                let mut names: Vec<String> =
                    self.registry.list().into_iter().map(|r| r.name).collect();
                if let Some(store) = &store {
                    match store.list().await {
                        Ok(list) => names.extend(list.into_iter().map(|m| m.name)),
                        Err(e) => {
                            return (ResultStatus::Error, json!({ "message": e.to_string() }))
                        }
                    }
                }
                names.retain(|n| in_scope(scope, n));
                names.sort();
                names.dedup();
                names
            }
        };
        for room in &rooms {
            if let Some(store) = &store {
                if let Err(e) = store.set_schema_version(room, version).await {
                    return (
                        ResultStatus::Error,
                        json!({ "message": format!("cannot record the version of {room:?}: {e}") }),
                    );
                }
            }
            lock(&self.state).schema.insert(room.clone(), version);
        }
        (
            ResultStatus::Ok,
            json!({ "version": version, "rooms": rooms.len() }),
        )
    }

    async fn invalidate(
        &self,
        command: &Command,
        from: Option<&(SessionId, String)>,
        peer_sv: Option<Vec<u8>>,
    ) -> (ResultStatus, Value) {
        let Some(room) = command.room.as_deref() else {
            return (
                ResultStatus::Error,
                json!({ "message": "invalidate needs a room" }),
            );
        };
        let Some((link, peer)) = from else {
            return (
                ResultStatus::Ok,
                json!({ "message": "the issuing node keeps its copy: the others resync from it" }),
            );
        };
        let Some(peer_sv) = peer_sv else {
            return (
                ResultStatus::Refused,
                json!({ "message": "the command came without the sender's state vector" }),
            );
        };
        match self.registry.discard(room, &peer_sv).await {
            Ok(existed) => {
                let resynced = self.mesh.resync_from(*link, room);
                (
                    ResultStatus::Ok,
                    json!({ "discarded": existed, "resync_from": peer, "resync_requested": resynced }),
                )
            }
            Err(DeleteError::NotCovered { .. }) => (
                ResultStatus::Refused,
                json!({ "message": format!(
                    "this node holds edits of {room:?} that {peer} does not have; dropping its copy would lose them"
                ) }),
            ),
            Err(e) => (ResultStatus::Error, json!({ "message": e.to_string() })),
        }
    }
}

fn no_store() -> (ResultStatus, Value) {
    (
        ResultStatus::Error,
        json!({ "message": "this node runs without a store (--memory)" }),
    )
}

/// The client names a node result says it delivered to.
fn delivered_to(detail: &Value) -> Vec<String> {
    detail
        .get("delivered_to")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn stored_rooms(
    store: &dyn Store,
    room: Option<&str>,
    scope: &Scope,
) -> Result<Vec<String>, String> {
    match room {
        Some(r) => Ok(vec![r.to_string()]),
        None => store
            .list()
            .await
            .map(|l| {
                l.into_iter()
                    .map(|m| m.name)
                    .filter(|n| in_scope(scope, n))
                    .collect()
            })
            .map_err(|e| e.to_string()),
    }
}

async fn compact(store: &dyn Store, room: Option<&str>, scope: &Scope) -> (ResultStatus, Value) {
    let rooms = match stored_rooms(store, room, scope).await {
        Ok(r) => r,
        Err(e) => return (ResultStatus::Error, json!({ "message": e })),
    };
    let (mut before, mut after, mut n) = (0u64, 0u64, 0usize);
    for r in &rooms {
        match store.compact(r).await {
            Ok((0, 0)) => {}
            Ok((b, a)) => {
                before += b;
                after += a;
                n += 1;
            }
            Err(e) => {
                return (
                    ResultStatus::Error,
                    json!({ "message": format!("compacting {r:?}: {e}") }),
                )
            }
        }
    }
    (
        ResultStatus::Ok,
        json!({ "rooms": n, "bytes_before": before, "bytes_after": after }),
    )
}

/// Rebuilds the room index from storage: every stored room must decode, and its recorded
/// state vector (and digest) must match its content; a mismatch is rewritten.
async fn reindex(
    registry: &RoomRegistry,
    store: &dyn Store,
    room: Option<&str>,
    scope: &Scope,
) -> (ResultStatus, Value) {
    use yrs::{ReadTxn, Transact};
    let rooms = match stored_rooms(store, room, scope).await {
        Ok(r) => r,
        Err(e) => return (ResultStatus::Error, json!({ "message": e })),
    };
    let (mut ok, mut fixed, mut damaged) = (0usize, Vec::new(), Vec::new());
    for name in &rooms {
        let loaded = match store.load(name).await {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => {
                damaged.push(json!({ "room": name, "error": e.to_string() }));
                continue;
            }
        };
        let doc = yrs::Doc::new();
        let mut failed = None;
        {
            let mut txn = doc.transact_mut();
            for blob in loaded.snapshot.iter().chain(loaded.updates.iter()) {
                match crate::protocol::scan::decode_update(blob) {
                    Ok(u) => {
                        if let Err(e) = txn.apply_update(u) {
                            failed = Some(e.to_string());
                        }
                    }
                    Err(e) => failed = Some(e.to_string()),
                }
            }
        }
        if let Some(e) = failed {
            damaged.push(json!({ "room": name, "error": e }));
            continue;
        }
        // A room in memory keeps its index current with every append.
        let live = registry.get(name).is_some_and(|r| r.is_loaded());
        let sv = {
            use yrs::updates::encoder::Encode;
            doc.transact().state_vector().encode_v1()
        };
        let canonical = crate::store::canonical_state_vector(name, &sv);
        let meta = store.meta(name).await.ok().flatten();
        if !live && meta.is_some_and(|m| m.state_vector != canonical) {
            let full = doc
                .transact()
                .encode_state_as_update_v1(&yrs::StateVector::default());
            match store.repair(name, bytes::Bytes::from(full), sv) {
                Ok(ticket) => {
                    let _ = store.wait_durable(ticket).await;
                    fixed.push(name.clone());
                }
                Err(e) => damaged.push(json!({ "room": name, "error": e.to_string() })),
            }
        } else {
            ok += 1;
        }
    }
    let status = if damaged.is_empty() {
        ResultStatus::Ok
    } else {
        ResultStatus::Error
    };
    (
        status,
        json!({ "rooms": rooms.len(), "ok": ok, "fixed": fixed, "damaged": damaged }),
    )
}
