//! Room names: one URL path segment, percent-decoded, no control characters, at most 512 bytes.

/// Longest room name, in bytes of UTF-8.
pub const MAX_ROOM_NAME_BYTES: usize = 512;

/// Why a room name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    /// The name is empty.
    #[error("room name is empty")]
    Empty,
    /// The name is longer than [`MAX_ROOM_NAME_BYTES`].
    #[error("room name is {0} bytes; the limit is {MAX_ROOM_NAME_BYTES}")]
    TooLong(usize),
    /// The name holds a control character.
    #[error("room name contains the control character U+{0:04X}")]
    ControlCharacter(u32),
    /// The percent-decoded bytes are not UTF-8.
    #[error("room name is not valid UTF-8 after percent-decoding")]
    NotUtf8,
}

/// Checks a decoded room name.
pub fn validate_room_name(name: &str) -> Result<(), RoomNameError> {
    if name.is_empty() {
        return Err(RoomNameError::Empty);
    }
    if name.len() > MAX_ROOM_NAME_BYTES {
        return Err(RoomNameError::TooLong(name.len()));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(RoomNameError::ControlCharacter(c as u32));
    }
    Ok(())
}

/// Percent-decodes one raw path segment into a room name and validates it. `+` stays a plus
/// (path segments are not form-encoded) and `%2F` becomes a `/` inside the name.
pub fn decode_room_segment(raw: &str) -> Result<String, RoomNameError> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| RoomNameError::NotUtf8)?
        .into_owned();
    validate_room_name(&decoded)?;
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_validates() {
        assert_eq!(decode_room_segment("notes").unwrap(), "notes");
        assert_eq!(decode_room_segment("a%2Fb").unwrap(), "a/b");
        assert_eq!(decode_room_segment("a+b").unwrap(), "a+b");
        assert_eq!(decode_room_segment("a%20b").unwrap(), "a b");
        assert_eq!(decode_room_segment("%E2%9C%93").unwrap(), "✓");
        assert_eq!(decode_room_segment("日本").unwrap(), "日本");
        assert_eq!(decode_room_segment(""), Err(RoomNameError::Empty));
        assert_eq!(
            decode_room_segment("a%00b"),
            Err(RoomNameError::ControlCharacter(0))
        );
        assert_eq!(
            decode_room_segment("a%0Ab"),
            Err(RoomNameError::ControlCharacter(10))
        );
        assert_eq!(decode_room_segment("%FF"), Err(RoomNameError::NotUtf8));
        assert!(decode_room_segment(&"x".repeat(512)).is_ok());
        assert_eq!(
            decode_room_segment(&"x".repeat(513)),
            Err(RoomNameError::TooLong(513))
        );
    }
}
