//! Commands across links: each command is accepted once per node, whichever link brings it
//! first, and is passed on to every other link that shares its room while it may still
//! travel (hop limit, deadline). Links that come up while it runs get it too.
//!
//! Commands are not CRDT data, so split horizon alone cannot end their travel in a cyclic
//! mesh: the (origin node, boot id, sequence) id and this seen-set do. What a node does with
//! an accepted command (deliver to clients, act, answer) is the command center's business.

use crate::command::{forwardable, Command, SeenSet};

use super::LinkId;

/// Ids remembered at once (each until its command's deadline).
const SEEN_CAPACITY: usize = 100_000;

/// A command accepted here and still running.
#[derive(Debug, Clone)]
struct Running {
    command: Command,
    /// The link it came by (`None`: issued here).
    upstream: Option<LinkId>,
}

/// The dedup state of one node.
#[derive(Debug)]
pub struct Flood {
    seen: SeenSet,
    running: Vec<Running>,
}

impl Default for Flood {
    fn default() -> Self {
        Flood {
            seen: SeenSet::new(SEEN_CAPACITY),
            running: Vec::new(),
        }
    }
}

impl Flood {
    /// Takes a command issued here or arriving over `upstream`. True the first time this
    /// node sees it before its deadline; false for a repeat or an expired command.
    pub fn accept(&mut self, command: &Command, upstream: Option<LinkId>, now_ms: u64) -> bool {
        self.seen.expire(now_ms);
        self.running.retain(|r| r.command.deadline_ms > now_ms);
        if now_ms >= command.deadline_ms
            || !self.seen.insert(&command.id, command.deadline_ms, now_ms)
        {
            return false;
        }
        self.running.push(Running {
            command: command.clone(),
            upstream,
        });
        true
    }

    /// Whether `command` may be passed on at `now_ms` (hop limit and deadline).
    pub fn travels(command: &Command, now_ms: u64) -> bool {
        forwardable(command, now_ms)
    }

    /// The running commands a new link should get: those that may still travel and did not
    /// come over that link.
    pub fn replay_for(&self, link: LinkId, now_ms: u64) -> Vec<Command> {
        self.running
            .iter()
            .filter(|r| r.upstream != Some(link) && forwardable(&r.command, now_ms))
            .map(|r| r.command.clone())
            .collect()
    }
}
