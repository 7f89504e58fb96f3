//! [`Grant`]: what one client connection may do, which rooms it may join and whether it may
//! write. A [`Session`](super::Session) carries one; joining a room and every update path
//! check it.
//!
//! Today every client gets [`Grant::all_write`]. Client authentication (static tokens, signed
//! user tokens, room-scoped read-only JWTs) plugs in by turning credentials into a different
//! grant before the session is made; the room logic does not change.

/// Which rooms a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomScope {
    /// Every room.
    All,
    /// Exactly this room.
    Exact(String),
    /// Every room whose name starts with this prefix (a JWT `room` claim `prefix*`).
    Prefix(String),
}

impl RoomScope {
    /// Whether `room` is in scope.
    pub fn allows(&self, room: &str) -> bool {
        match self {
            RoomScope::All => true,
            RoomScope::Exact(name) => name == room,
            RoomScope::Prefix(prefix) => room.starts_with(prefix.as_str()),
        }
    }
}

/// What one client connection may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    rooms: RoomScope,
    write: bool,
    /// Who the client is, when its credential names a user (a signed user token).
    user: Option<String>,
}

impl Default for Grant {
    /// [`Grant::all_write`].
    fn default() -> Self {
        Grant::all_write()
    }
}

impl Grant {
    /// Every room, read and write: what every client gets until client authentication.
    pub fn all_write() -> Self {
        Grant {
            rooms: RoomScope::All,
            write: true,
            user: None,
        }
    }

    /// The rooms of `rooms`, with or without write.
    pub fn new(rooms: RoomScope, write: bool) -> Self {
        Grant {
            rooms,
            write,
            user: None,
        }
    }

    /// The same rooms, read-only: the session receives everything and may not edit.
    pub fn read_only(self) -> Self {
        Grant {
            write: false,
            ..self
        }
    }

    /// The same grant, for the authenticated user `user`.
    pub fn with_user(self, user: Option<String>) -> Self {
        Grant { user, ..self }
    }

    /// The authenticated user, if the credential named one.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Which rooms this grant covers.
    pub fn rooms(&self) -> &RoomScope {
        &self.rooms
    }

    /// Whether a session with this grant may join `room`.
    pub fn allows_room(&self, room: &str) -> bool {
        self.rooms.allows(room)
    }

    /// Whether a session with this grant may change documents (updates, SyncStep2).
    pub fn can_write(&self) -> bool {
        self.write
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let all = Grant::all_write();
        assert!(all.allows_room("any") && all.can_write());
        assert_eq!(Grant::default(), all);
        let one = Grant::new(RoomScope::Exact("notes".into()), true);
        assert!(one.allows_room("notes") && !one.allows_room("notes2"));
        let prefix = Grant::new(RoomScope::Prefix("team/".into()), true).read_only();
        assert!(prefix.allows_room("team/a") && !prefix.allows_room("other"));
        assert!(!prefix.can_write());
        assert_eq!(prefix.rooms(), &RoomScope::Prefix("team/".into()));
    }
}
