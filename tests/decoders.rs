//! Property tests of every decoder that takes bytes from the network: y-websocket frames
//! (`protocol::messages`, `check_frame`, `decode_frame`), state vectors, updates and awareness
//! updates (`protocol::scan`, then yrs), the type-103 command envelope, mesh frames (whole
//! and as a byte stream) and the store's state-vector helpers.
//!
//! Inputs are random bytes, and valid frames of each kind mutated: bytes flipped, inserted or
//! deleted, huge varints spliced in, the end cut off. Two properties hold for each decoder:
//!
//! - it does not panic (a debug build, so arithmetic overflow in a decoder panics too);
//! - it allocates at most [`BYTES_PER_INPUT_BYTE`] bytes per input byte plus
//!   [`SLACK_BYTES`], measured by a counting global allocator (peak of the bytes live on this
//!   thread while it decodes). A decoder that pre-allocated from a claimed count would reserve
//!   gigabytes from a few bytes.
//!
//! This is a binary of its own because of the global allocator. Cases per property:
//! `PROPTEST_CASES` (default 256 here).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use proptest::prelude::*;
use ymesh::mesh::wire;
use ymesh::protocol::{self, scan};
use yrs::updates::encoder::Encode;
use yrs::{Any, Array, Doc, Map, ReadTxn, StateVector, Text, Transact};

/// What a decoder may allocate per byte of input. yrs turns a few bytes into a block of a
/// hundred or more (an item with an origin and one character is four bytes on the wire);
/// a decoder that trusted a claimed count would go past this by orders of magnitude.
const BYTES_PER_INPUT_BYTE: usize = 256;
/// Fixed allocations (tables, string buffers, error messages) whatever the input.
const SLACK_BYTES: usize = 64 * 1024;

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counting only reads
// sizes and touches const-initialized thread locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns the peak of the bytes it had allocated at once (what it returns
/// included, since that is dropped inside).
fn peak_of(f: impl FnOnce()) -> usize {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    f();
    (PEAK.with(Cell::get) - start).max(0) as usize
}

fn assert_bounded(what: &str, input: &[u8], f: impl FnOnce()) {
    let peak = peak_of(f);
    let bound = BYTES_PER_INPUT_BYTE * input.len() + SLACK_BYTES;
    assert!(
        peak <= bound,
        "{what}: {} input bytes made the decoder allocate {peak} bytes (bound {bound}): {:02x?}",
        input.len(),
        &input[..input.len().min(64)]
    );
}

/// Valid payloads of every kind, to mutate.
struct Seeds {
    updates: Vec<Vec<u8>>,
    state_vectors: Vec<Vec<u8>>,
    awareness: Vec<Vec<u8>>,
    frames: Vec<Vec<u8>>,
    commands: Vec<String>,
    mesh_frames: Vec<Vec<u8>>,
}

fn seeds() -> Seeds {
    let doc = Doc::with_client_id(7);
    let text = doc.get_or_insert_text("t");
    let map = doc.get_or_insert_map("m");
    let array = doc.get_or_insert_array("a");
    let mut updates = Vec::new();
    {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "hello wörld");
        updates.push(txn.encode_update_v1());
    }
    {
        let mut txn = doc.transact_mut();
        map.insert(
            &mut txn,
            "k",
            Any::from(vec![Any::from(1i64), Any::from("s"), Any::Null]),
        );
        array.insert_range(&mut txn, 0, [Any::from(2.5), Any::from(true)]);
        text.remove_range(&mut txn, 0, 2);
        updates.push(txn.encode_update_v1());
    }
    updates.push(
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default()),
    );
    let state_vectors = vec![
        doc.transact().state_vector().encode_v1(),
        vec![0],
        vec![2, 1, 5, 0x80, 0x80, 0x04, 9],
    ];
    let awareness = vec![
        [
            &[2u8, 10, 3, 2][..],
            b"{}",
            &[11, 1, 17],
            br#"{"user":"alice"}"#,
        ]
        .concat(),
        vec![1, 11, 4, 4, b'n', b'u', b'l', b'l'],
    ];
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for u in &updates {
        frames.push(protocol::encode_sync_update(u).to_vec());
        frames.push(protocol::encode_sync_step2(u).to_vec());
    }
    for sv in &state_vectors {
        frames.push(protocol::encode_sync_step1(sv).to_vec());
    }
    for a in &awareness {
        frames.push(protocol::encode_awareness(a).to_vec());
    }
    frames.push(protocol::encode_query_awareness().to_vec());
    frames.push(protocol::encode_sync_status(&[2, 0xac, 2]).to_vec());
    frames.push(protocol::encode_auth_denied("no").to_vec());
    let commands = vec![
        r#"{"id":"n1-b1-1","kind":"compact","room":"notes","args":{},"origin":"n1","boot":"b1","seq":1,"issued_ms":1000,"deadline_ms":31000,"hops":0}"#.to_string(),
        r#"{"id":"n1-b1-1","responder":"c","status":"ok","detail":null}"#.to_string(),
    ];
    for c in &commands {
        frames.push(protocol::encode_command(0, c).to_vec());
    }
    frames.push(frames[0..3].concat());
    let mesh_frames = vec![
        wire::encode_control(&wire::Control::Ping { t: 1 << 40 }).to_vec(),
        wire::encode_control(&wire::Control::Manifest {
            rooms: vec![wire::ManifestEntry {
                name: "notes".into(),
                digest: "ab".repeat(32),
            }],
            complete: true,
        })
        .to_vec(),
        wire::encode_room("notes", &frames[0]).to_vec(),
    ];
    Seeds {
        updates,
        state_vectors,
        awareness,
        frames,
        commands,
        mesh_frames,
    }
}

/// One change to a valid input.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    /// A varint of this value spliced in (huge counts and lengths).
    Varint(usize, u64),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        (
            any::<usize>(),
            prop_oneof![
                Just(u64::from(u32::MAX)),
                Just(1u64 << 29),
                Just((1u64 << 53) - 1),
                Just(1u64 << 53),
                Just(u64::MAX),
                any::<u64>()
            ]
        )
            .prop_map(|(i, v)| Mutation::Varint(i, v)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match m {
            Mutation::Set(i, b) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] = *b;
            }
            Mutation::Insert(i, b) => {
                let i = at(*i, bytes.len());
                bytes.insert(i, *b);
            }
            Mutation::Remove(i) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes.remove(i);
            }
            Mutation::Varint(i, v) => {
                let i = at(*i, bytes.len());
                let mut n = *v;
                let mut enc = Vec::new();
                while n >= 0x80 {
                    enc.push((n as u8 & 0x7f) | 0x80);
                    n >>= 7;
                }
                enc.push(n as u8);
                bytes.splice(i..i, enc);
            }
            Mutation::Truncate(n) => {
                let n = n % (bytes.len() + 1);
                bytes.truncate(n);
            }
            _ => {}
        }
    }
    bytes
}

/// Picks seed `i` of `list` and mutates it.
fn mutated(list: &[Vec<u8>], i: usize, ms: &[Mutation]) -> Vec<u8> {
    mutate(list[i % list.len()].clone(), ms)
}

fn frame_decoders(input: &[u8]) {
    let frame = Bytes::copy_from_slice(input);
    assert_bounded("check_frame", input, || {
        let _ = protocol::check_frame(&frame);
    });
    // check_frame predicts what walking the frame gives: as many messages, or the same error.
    assert_eq!(
        protocol::check_frame(&frame),
        protocol::decode_frame(frame.clone()).map(|m| m.len()),
        "{input:02x?}"
    );
    assert_bounded("messages", input, || {
        for msg in protocol::messages(frame.clone()) {
            // What a session does with each payload: scan and decode it.
            match msg {
                Ok(protocol::Message::Sync(protocol::SyncMessage::Step1(sv))) => {
                    let _ = scan::decode_state_vector(&sv);
                }
                Ok(protocol::Message::Sync(
                    protocol::SyncMessage::Step2(u) | protocol::SyncMessage::Update(u),
                )) => {
                    let _ = scan::decode_update(&u);
                }
                Ok(protocol::Message::Awareness(a)) => {
                    let _ = scan::decode_awareness(&a);
                }
                Ok(protocol::Message::Command { subtype, json }) => {
                    let _ = ymesh::command::envelope::decode(subtype, &json);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
}

fn payload_decoders(input: &[u8]) {
    assert_bounded("state vector", input, || {
        let _ = scan::decode_state_vector(input);
    });
    assert_bounded("update", input, || {
        if let Ok(update) = scan::decode_update(input) {
            // What a room does next: apply it.
            let doc = Doc::new();
            let _ = doc.transact_mut().apply_update(update);
        }
    });
    assert_bounded("awareness", input, || {
        let _ = scan::decode_awareness(input);
    });
    assert_bounded("merge_state_vectors", input, || {
        let _ = ymesh::store::merge_state_vectors(input, &[1, 1, 1]);
    });
    assert_bounded("state_vector_covers", input, || {
        let _ = ymesh::store::state_vector_covers(input, input);
    });
}

fn mesh_decoders(input: &[u8]) {
    assert_bounded("mesh decode_frame", input, || {
        let _ = wire::decode_frame(Bytes::copy_from_slice(input), wire::MAX_FRAME_LEN);
    });
    assert_bounded("mesh FrameDecoder", input, || {
        let mut d = wire::FrameDecoder::default();
        for chunk in input.chunks(7) {
            d.extend(chunk);
            // Bounded: each frame consumes at least one byte.
            for _ in 0..=input.len() {
                match d.next_frame() {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }
    });
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes(input in proptest::collection::vec(any::<u8>(), 0..600)) {
        frame_decoders(&input);
        payload_decoders(&input);
        mesh_decoders(&input);
        let text = String::from_utf8_lossy(&input);
        assert_bounded("command envelope", &input, || {
            let _ = ymesh::command::envelope::decode(0, &text);
            let _ = ymesh::command::envelope::decode(1, &text);
        });
    }

    #[test]
    fn mutated_frames(i in any::<usize>(), ms in proptest::collection::vec(mutation(), 1..6)) {
        let s = seeds();
        frame_decoders(&mutated(&s.frames, i, &ms));
    }

    #[test]
    fn mutated_updates(i in any::<usize>(), ms in proptest::collection::vec(mutation(), 1..6)) {
        let s = seeds();
        payload_decoders(&mutated(&s.updates, i, &ms));
    }

    #[test]
    fn mutated_state_vectors_and_awareness(
        i in any::<usize>(),
        ms in proptest::collection::vec(mutation(), 1..6),
    ) {
        let s = seeds();
        payload_decoders(&mutated(&s.state_vectors, i, &ms));
        payload_decoders(&mutated(&s.awareness, i, &ms));
    }

    #[test]
    fn mutated_mesh_frames(i in any::<usize>(), ms in proptest::collection::vec(mutation(), 1..6)) {
        let s = seeds();
        let input = mutated(&s.mesh_frames, i, &ms);
        mesh_decoders(&input);
    }

    #[test]
    fn mutated_commands(i in any::<usize>(), ms in proptest::collection::vec(mutation(), 1..6)) {
        let s = seeds();
        let bytes: Vec<Vec<u8>> = s.commands.iter().map(|c| c.clone().into_bytes()).collect();
        let input = mutated(&bytes, i, &ms);
        let text = String::from_utf8_lossy(&input);
        assert_bounded("command envelope", &input, || {
            let _ = ymesh::command::envelope::decode(0, &text);
            let _ = ymesh::command::envelope::decode(1, &text);
        });
        frame_decoders(&protocol::encode_command(1, &text));
    }
}

/// The attacks that motivated the bounds, as fixed cases: each is refused and allocates
/// almost nothing.
#[test]
fn known_bombs_allocate_almost_nothing() {
    let var = |mut n: u64| {
        let mut out = Vec::new();
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out
    };
    let sv_bomb = [var(1 << 29), vec![0, 0]].concat();
    let update_bomb = [var(1 << 27), vec![0; 5]].concat();
    for input in [&sv_bomb, &update_bomb] {
        let peak = peak_of(|| {
            assert!(scan::decode_state_vector(input).is_err());
            assert!(scan::decode_update(input).is_err());
            assert!(scan::decode_awareness(input).is_err());
        });
        assert!(peak < 4096, "{peak} bytes");
    }
    // 1 MiB of QueryAwareness, of zeros, of SyncStep1s: walking the frame keeps one message.
    for frame in [
        vec![3u8; 1 << 20],
        vec![0u8; 1 << 20],
        [0u8, 0, 1, 0].repeat(1 << 18),
    ] {
        let frame = Bytes::from(frame);
        let peak = peak_of(|| {
            let _ = protocol::check_frame(&frame);
            for msg in protocol::messages(frame.clone()) {
                let _ = msg;
            }
        });
        assert!(peak < 4096, "{peak} bytes");
    }
    // A mesh stream frame claiming 64 MiB reserves nothing for it.
    let mut d = wire::FrameDecoder::default();
    let prefix = var(wire::MAX_FRAME_LEN);
    let peak = peak_of(|| {
        d.extend(&prefix);
        assert!(d.next_frame().unwrap().is_none());
    });
    assert!(peak < 4096, "{peak} bytes");
    // Sanity: the counter sees a real allocation.
    assert!(peak_of(|| drop(vec![0u8; 1 << 20])) >= 1 << 20);
}
