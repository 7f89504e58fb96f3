//! Handshake tests: two machines wired to each other in memory, plus a hostile peer that
//! forges, tampers with and replays messages.

use std::collections::VecDeque;

use super::*;

fn node(seed: u8) -> Arc<NodeIdentity> {
    Arc::new(NodeIdentity::from_secret_bytes([seed; 32]))
}

fn secret(s: &str) -> Admission {
    Admission {
        secret: Some(s.into()),
        allow: vec![],
    }
}

fn allow(ids: &[&str]) -> Admission {
    Admission {
        secret: None,
        allow: ids.iter().map(|s| s.to_string()).collect(),
    }
}

fn hs(id: &Arc<NodeIdentity>, admission: Admission) -> Handshake {
    Handshake::new(
        id.clone(),
        admission,
        format!("boot-{}", id.node_id()),
        None,
    )
}

/// Runs two handshakes against each other, delivering messages in order in both
/// directions (alternating), until both have finished. Returns both outcomes.
fn run(mut a: Handshake, mut b: Handshake) -> (Outcome, Outcome) {
    let mut to_b: VecDeque<Control> = VecDeque::new();
    let mut to_a: VecDeque<Control> = VecDeque::new();
    let mut out_a = None;
    let mut out_b = None;
    let push = |actions: Vec<Action>, q: &mut VecDeque<Control>, out: &mut Option<Outcome>| {
        for action in actions {
            match action {
                Action::Send(c) => q.push_back(c),
                Action::Finish(o) => {
                    assert!(out.is_none(), "finished twice");
                    *out = Some(o);
                }
            }
        }
    };
    push(a.start(), &mut to_b, &mut out_a);
    push(b.start(), &mut to_a, &mut out_b);
    for _ in 0..100 {
        if let Some(m) = to_a.pop_front() {
            push(a.on_message(m), &mut to_b, &mut out_a);
        }
        if let Some(m) = to_b.pop_front() {
            push(b.on_message(m), &mut to_a, &mut out_b);
        }
        if to_a.is_empty() && to_b.is_empty() {
            break;
        }
    }
    assert_eq!(a.outcome(), out_a.as_ref());
    assert_eq!(b.outcome(), out_b.as_ref());
    (out_a.expect("a finished"), out_b.expect("b finished"))
}

fn established(o: &Outcome) -> &PeerInfo {
    match o {
        Outcome::Established(info) => info,
        other => panic!("expected established, got {other:?}"),
    }
}

fn sends(actions: &[Action]) -> Vec<&Control> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(c) => Some(c),
            Action::Finish(_) => None,
        })
        .collect()
}

fn finish(actions: &[Action]) -> Option<&Outcome> {
    actions.iter().find_map(|a| match a {
        Action::Finish(o) => Some(o),
        Action::Send(_) => None,
    })
}

fn only_send(actions: Vec<Action>) -> Control {
    assert_eq!(actions.len(), 1, "{actions:?}");
    match actions.into_iter().next() {
        Some(Action::Send(c)) => c,
        other => panic!("expected one send, got {other:?}"),
    }
}

#[test]
fn open_mesh_establishes_both_ways() {
    let (a, b) = (node(1), node(2));
    let ha = Handshake::new(
        a.clone(),
        Admission::open(),
        "boot-a",
        Some("http://a:3913".into()),
    );
    let hb = Handshake::new(b.clone(), Admission::open(), "boot-b", None);
    let (oa, ob) = run(ha, hb);
    let pa = established(&oa);
    assert_eq!(pa.node_id, b.node_id());
    assert_eq!(pa.boot_id, "boot-b");
    assert_eq!(pa.listen, None);
    assert_eq!(pa.version, MESH_PROTOCOL_VERSION);
    assert_eq!(pa.admitted_by, AdmittedBy::Open);
    let pb = established(&ob);
    assert_eq!(pb.node_id, a.node_id());
    assert_eq!(pb.boot_id, "boot-a");
    assert_eq!(pb.listen.as_deref(), Some("http://a:3913"));
}

#[test]
fn shared_secret_establishes() {
    let (a, b) = (node(1), node(2));
    let (oa, ob) = run(hs(&a, secret("s3cret")), hs(&b, secret("s3cret")));
    assert_eq!(established(&oa).admitted_by, AdmittedBy::Secret);
    assert_eq!(established(&ob).admitted_by, AdmittedBy::Secret);
}

#[test]
fn allow_lists_establish() {
    let (a, b) = (node(1), node(2));
    let (oa, ob) = run(
        hs(&a, allow(&["someone-else", b.node_id()])),
        hs(&b, allow(&[a.node_id()])),
    );
    assert_eq!(established(&oa).admitted_by, AdmittedBy::AllowList);
    assert_eq!(established(&ob).admitted_by, AdmittedBy::AllowList);
}

#[test]
fn wrong_secret_is_refused_on_both_sides() {
    let (a, b) = (node(1), node(2));
    let (oa, ob) = run(hs(&a, secret("one")), hs(&b, secret("two")));
    assert_eq!(
        oa,
        Outcome::Refused(HandshakeError::WrongSecret {
            node_id: b.node_id().into()
        })
    );
    assert_eq!(
        ob,
        Outcome::Refused(HandshakeError::WrongSecret {
            node_id: a.node_id().into()
        })
    );
    let Outcome::Refused(e) = &oa else {
        unreachable!()
    };
    assert!(e.is_admission());
    assert!(e.to_string().contains("mesh secret"), "{e}");
}

#[test]
fn missing_secret_is_refused_and_the_peer_hears_why() {
    let (a, b) = (node(1), node(2));
    let (oa, ob) = run(hs(&a, secret("s")), hs(&b, Admission::open()));
    assert_eq!(
        oa,
        Outcome::Refused(HandshakeError::MissingSecret {
            node_id: b.node_id().into()
        })
    );
    match ob {
        Outcome::RefusedByPeer(reason) => {
            assert!(reason.contains("requires the mesh secret"), "{reason}");
            assert!(reason.contains(b.node_id()), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unlisted_node_is_refused() {
    let (a, b) = (node(1), node(2));
    let (oa, ob) = run(
        hs(&a, allow(&["12D3KooWnobody"])),
        hs(&b, Admission::open()),
    );
    assert_eq!(
        oa,
        Outcome::Refused(HandshakeError::NotAllowed {
            node_id: b.node_id().into()
        })
    );
    match ob {
        Outcome::RefusedByPeer(reason) => {
            assert_eq!(
                reason,
                format!(
                    "node {} is not in this node's allow list (--allow-peer)",
                    b.node_id()
                )
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn with_secret_and_allow_list_either_admits() {
    let (a, b) = (node(1), node(2));
    let both = |s: &str, ids: &[&str]| Admission {
        secret: Some(s.into()),
        allow: ids.iter().map(|s| s.to_string()).collect(),
    };
    // Secret matches, not listed.
    let (oa, _) = run(hs(&a, both("s", &["x"])), hs(&b, secret("s")));
    assert_eq!(established(&oa).admitted_by, AdmittedBy::Secret);
    // Listed, secret differs (b's mac is wrong) or absent.
    let (oa, _) = run(hs(&a, both("s", &[b.node_id()])), hs(&b, Admission::open()));
    assert_eq!(established(&oa).admitted_by, AdmittedBy::AllowList);
    let (oa, ob) = run(
        hs(&a, both("s", &[b.node_id()])),
        hs(&b, both("t", &[a.node_id()])),
    );
    assert_eq!(established(&oa).admitted_by, AdmittedBy::AllowList);
    assert_eq!(established(&ob).admitted_by, AdmittedBy::AllowList);
    // A admits B by the list, but B refuses A (wrong secret, not listed): A hears why.
    let (oa, ob) = run(hs(&a, both("s", &[b.node_id()])), hs(&b, secret("t")));
    assert!(matches!(
        ob,
        Outcome::Refused(HandshakeError::WrongSecret { .. })
    ));
    assert!(matches!(oa, Outcome::RefusedByPeer(r) if r.contains("mesh secret")));
    // Neither.
    let (oa, _) = run(hs(&a, both("s", &["x"])), hs(&b, secret("t")));
    assert_eq!(
        oa,
        Outcome::Refused(HandshakeError::NotAdmitted {
            node_id: b.node_id().into()
        })
    );
}

/// A hello as `id` would send it, with a chosen nonce and version.
fn hello_of(id: &NodeIdentity, nonce: [u8; NONCE_LEN], version: u32) -> Control {
    Control::Hello {
        version,
        node_id: id.node_id().into(),
        public_key: hex::encode(&id.public_key_bytes()),
        boot_id: "boot".into(),
        nonce: hex::encode(&nonce),
        listen: None,
    }
}

#[test]
fn version_mismatch_names_both_versions() {
    let (a, b) = (node(1), node(2));
    let mut ha = hs(&a, Admission::open());
    ha.start();
    let actions = ha.on_message(hello_of(&b, [9; 32], 2));
    let sent = sends(&actions);
    assert_eq!(
        sent,
        vec![&Control::Refused {
            reason: "mesh protocol version 2 is not supported by this node (speaks 1)".into()
        }]
    );
    assert_eq!(
        finish(&actions),
        Some(&Outcome::Refused(HandshakeError::VersionMismatch {
            theirs: 2,
            ours: 1
        }))
    );
}

#[test]
fn a_newer_hello_with_extra_fields_still_gets_a_version_answer() {
    let json = r#"{"type":"hello","version":7,"node_id":"x","public_key":"00","boot_id":"b",
                   "nonce":"00","listen":null,"features":["turbo"]}"#;
    let hello: Control = serde_json::from_str(json).unwrap();
    let mut ha = hs(&node(1), Admission::open());
    ha.start();
    let actions = ha.on_message(hello);
    assert!(matches!(
        finish(&actions),
        Some(Outcome::Refused(HandshakeError::VersionMismatch {
            theirs: 7,
            ours: 1
        }))
    ));
}

#[test]
fn self_connection_is_reported_distinctly() {
    let a = node(1);
    let (o1, o2) = run(hs(&a, Admission::open()), hs(&a, Admission::open()));
    assert_eq!(o1, Outcome::SelfConnection);
    assert_eq!(o2, Outcome::SelfConnection);
}

#[test]
fn expected_peer_is_enforced() {
    let (a, b, c) = (node(1), node(2), node(3));
    let (oa, ob) = run(
        hs(&a, Admission::open()).expect_peer(c.node_id()),
        hs(&b, Admission::open()),
    );
    assert_eq!(
        oa,
        Outcome::Refused(HandshakeError::UnexpectedPeer {
            expected: c.node_id().into(),
            actual: b.node_id().into()
        })
    );
    assert!(matches!(ob, Outcome::RefusedByPeer(_)));
    let (oa, _) = run(
        hs(&a, Admission::open()).expect_peer(b.node_id()),
        hs(&b, Admission::open()),
    );
    established(&oa);
}

/// Drives `a` through hello and returns the proof it sent, with `a` now waiting for a proof.
fn a_after_hello(a: &mut Handshake, peer_hello: Control) -> Control {
    a.start();
    only_send(a.on_message(peer_hello))
}

#[test]
fn tampered_signature_is_rejected() {
    let (a, b) = (node(1), node(2));
    let mut ha = hs(&a, Admission::open());
    let mut hb = hs(&b, Admission::open());
    let Action::Send(hello_b) = hb.start().remove(0) else {
        unreachable!()
    };
    let Action::Send(hello_a) = ha.start().remove(0) else {
        unreachable!()
    };
    only_send(ha.on_message(hello_b));
    let Control::Proof { signature, mac } = only_send(hb.on_message(hello_a)) else {
        panic!("expected proof")
    };
    let mut sig = hex::decode(&signature).unwrap();
    sig[10] ^= 0x01;
    let actions = ha.on_message(Control::Proof {
        signature: hex::encode(&sig),
        mac,
    });
    assert_eq!(
        finish(&actions),
        Some(&Outcome::Refused(HandshakeError::BadSignature {
            node_id: b.node_id().into()
        }))
    );
    // Not hex, or the wrong length, is the same failure.
    for bad in ["zz", "00"] {
        let mut ha = hs(&a, Admission::open());
        a_after_hello(&mut ha, hello_of(&b, [5; 32], 1));
        let actions = ha.on_message(Control::Proof {
            signature: bad.into(),
            mac: None,
        });
        assert!(matches!(
            finish(&actions),
            Some(Outcome::Refused(HandshakeError::BadSignature { .. }))
        ));
    }
}

#[test]
fn swapped_public_key_is_rejected() {
    let (a, b, c) = (node(1), node(2), node(3));
    // B's id with C's key.
    let mut ha = hs(&a, Admission::open());
    ha.start();
    let actions = ha.on_message(Control::Hello {
        version: 1,
        node_id: b.node_id().into(),
        public_key: hex::encode(&c.public_key_bytes()),
        boot_id: "x".into(),
        nonce: hex::encode(&[1; 32]),
        listen: None,
    });
    assert_eq!(
        finish(&actions),
        Some(&Outcome::Refused(HandshakeError::NodeIdMismatch {
            claimed: b.node_id().into(),
            actual: c.node_id().into()
        }))
    );
    // B claims to be C (C's id and key, both public), but can only sign with its own key.
    let mut ha = hs(&a, allow(&[c.node_id()]));
    a_after_hello(&mut ha, hello_of(&c, [1; 32], 1));
    let t = transcript(ha.nonce(), &[1; 32], c.node_id(), a.node_id());
    let actions = ha.on_message(Control::Proof {
        signature: hex::encode(&b.sign(&t)),
        mac: None,
    });
    assert_eq!(
        finish(&actions),
        Some(&Outcome::Refused(HandshakeError::BadSignature {
            node_id: c.node_id().into()
        }))
    );
}

#[test]
fn proofs_cannot_be_replayed_or_reflected() {
    let (a, b) = (node(1), node(2));
    // Record a real session between A and B: B's hello and B's proof to A.
    let mut ha1 = hs(&a, Admission::open());
    let mut hb1 = hs(&b, Admission::open());
    let hello_a1 = ha1.start().remove(0).sent();
    let hello_b1 = hb1.start().remove(0).sent();
    let proof_b1 = only_send(hb1.on_message(hello_a1));
    only_send(ha1.on_message(hello_b1.clone()));
    // A verifies it in that session.
    assert_eq!(
        sends(&ha1.on_message(proof_b1.clone())),
        vec![&Control::Welcome {}]
    );

    // Replay into a new session of A: its nonce is fresh, so the old proof fails.
    let mut ha2 = hs(&a, Admission::open());
    a_after_hello(&mut ha2, hello_b1.clone());
    let actions = ha2.on_message(proof_b1);
    assert!(matches!(
        finish(&actions),
        Some(Outcome::Refused(HandshakeError::BadSignature { .. }))
    ));

    // Reflection: A's own proof sent back to A as if it were B's.
    let mut ha3 = hs(&a, Admission::open());
    let proof_a3 = a_after_hello(&mut ha3, hello_b1);
    let actions = ha3.on_message(proof_a3);
    assert!(matches!(
        finish(&actions),
        Some(Outcome::Refused(HandshakeError::BadSignature { .. }))
    ));

    // A mesh MAC is bound to the session the same way: replaying a valid MAC with a
    // valid-looking but stale signature fails on the signature first; a fresh signature
    // with a stale MAC fails admission.
    let (hello_b, nonce_b) = (hello_of(&b, [3; 32], 1), [3u8; 32]);
    let mut ha4 = hs(&a, secret("s"));
    a_after_hello(&mut ha4, hello_b);
    let fresh = transcript(ha4.nonce(), &nonce_b, b.node_id(), a.node_id());
    let stale = transcript(&[0; 32], &nonce_b, b.node_id(), a.node_id());
    let actions = ha4.on_message(Control::Proof {
        signature: hex::encode(&b.sign(&fresh)),
        mac: Some(hex::encode(&mesh_mac("s", &stale))),
    });
    assert!(matches!(
        finish(&actions),
        Some(Outcome::Refused(HandshakeError::WrongSecret { .. }))
    ));
}

#[test]
fn reflected_hello_nonce_is_rejected() {
    let (a, b) = (node(1), node(2));
    let mut ha = hs(&a, Admission::open()).with_nonce([4; 32]);
    ha.start();
    let actions = ha.on_message(hello_of(&b, [4; 32], 1));
    assert_eq!(
        finish(&actions),
        Some(&Outcome::Refused(HandshakeError::ReflectedNonce))
    );
}

#[test]
fn malformed_hellos_are_refused() {
    let (a, b) = (node(1), node(2));
    let good = || match hello_of(&b, [1; 32], 1) {
        Control::Hello {
            version,
            node_id,
            public_key,
            boot_id,
            nonce,
            listen,
        } => (version, node_id, public_key, boot_id, nonce, listen),
        _ => unreachable!(),
    };
    let variants = [
        ("public_key", "zz".to_string()),
        ("public_key", "0801".to_string()),
        ("nonce", "00".to_string()),
        ("nonce", "x".repeat(64)),
    ];
    for (field, value) in variants {
        let (version, node_id, mut public_key, boot_id, mut nonce, listen) = good();
        if field == "nonce" {
            nonce = value.clone();
        } else {
            public_key = value.clone();
        }
        let mut ha = hs(&a, Admission::open());
        ha.start();
        let actions = ha.on_message(Control::Hello {
            version,
            node_id,
            public_key,
            boot_id,
            nonce,
            listen,
        });
        assert!(
            matches!(
                finish(&actions),
                Some(Outcome::Refused(HandshakeError::InvalidHello(_)))
            ),
            "{field}={value}: {actions:?}"
        );
    }
}

#[test]
fn out_of_order_messages_are_protocol_errors() {
    let (a, b) = (node(1), node(2));
    let cases: Vec<(Vec<Control>, &str)> = vec![
        (
            vec![Control::Proof {
                signature: "00".into(),
                mac: None,
            }],
            "protocol error: unexpected proof message while waiting for hello",
        ),
        (
            vec![Control::Welcome {}],
            "protocol error: unexpected welcome message while waiting for hello",
        ),
        (
            vec![hello_of(&b, [1; 32], 1), hello_of(&b, [1; 32], 1)],
            "protocol error: unexpected hello message while waiting for proof",
        ),
        (
            vec![hello_of(&b, [1; 32], 1), Control::Welcome {}],
            "protocol error: unexpected welcome message while waiting for proof",
        ),
        (
            vec![Control::Manifest {
                rooms: vec![],
                complete: true,
            }],
            "protocol error: unexpected manifest message while waiting for hello",
        ),
    ];
    for (msgs, reason) in cases {
        let mut ha = hs(&a, Admission::open());
        ha.start();
        let mut last = Vec::new();
        for m in msgs {
            last = ha.on_message(m);
        }
        assert_eq!(
            sends(&last),
            vec![&Control::Refused {
                reason: reason.into()
            }]
        );
        assert!(matches!(
            finish(&last),
            Some(Outcome::Refused(HandshakeError::Unexpected { .. }))
        ));
        assert!(ha.is_finished());
    }
}

#[test]
fn unknown_and_liveness_messages_are_ignored_during_the_handshake() {
    let (a, b) = (node(1), node(2));
    let mut ha = hs(&a, Admission::open());
    ha.start();
    assert!(ha.on_message(Control::Unknown).is_empty());
    assert!(ha.on_message(Control::Ping { t: 1 }).is_empty());
    assert!(ha.on_message(Control::Pong { t: 1 }).is_empty());
    assert!(matches!(
        only_send(ha.on_message(hello_of(&b, [1; 32], 1))),
        Control::Proof { .. }
    ));
    assert_eq!(ha.peer_node_id(), Some(b.node_id()));
}

#[test]
fn refused_by_peer_at_any_point_and_silence_afterwards() {
    let (a, b) = (node(1), node(2));
    let mut ha = hs(&a, Admission::open());
    // on_message before start sends the hello first.
    let actions = ha.on_message(Control::Refused {
        reason: "go away".into(),
    });
    assert!(matches!(sends(&actions)[..], [Control::Hello { .. }]));
    assert_eq!(
        finish(&actions),
        Some(&Outcome::RefusedByPeer("go away".into()))
    );
    assert!(ha.on_message(hello_of(&b, [1; 32], 1)).is_empty());
    assert!(ha.start().is_empty());
}

trait Sent {
    fn sent(self) -> Control;
}

impl Sent for Action {
    fn sent(self) -> Control {
        match self {
            Action::Send(c) => c,
            Action::Finish(o) => panic!("expected a send, got {o:?}"),
        }
    }
}

// ---- The worked example in docs/mesh-protocol.md. Change both together. ----

/// Node A = secret key [1; 32], nonce [0xaa; 32]; node B = secret key [2; 32],
/// nonce [0xbb; 32]; mesh secret "correct horse".
pub(crate) fn doc_example() -> (Vec<Control>, Vec<Control>) {
    let (a, b) = (node(1), node(2));
    let adm = secret("correct horse");
    let mut ha = Handshake::new(a, adm.clone(), "a1", Some("http://10.0.0.1:3913".into()))
        .with_nonce([0xaa; 32]);
    let mut hb = Handshake::new(b, adm, "b1", None).with_nonce([0xbb; 32]);
    let hello_a = ha.start().remove(0).sent();
    let hello_b = hb.start().remove(0).sent();
    let proof_b = only_send(hb.on_message(hello_a.clone()));
    let proof_a = only_send(ha.on_message(hello_b.clone()));
    let welcome_a = only_send(ha.on_message(proof_b.clone()));
    let welcome_b = only_send(hb.on_message(proof_a.clone()));
    assert!(matches!(
        finish(&ha.on_message(welcome_b.clone())),
        Some(Outcome::Established(_))
    ));
    assert!(matches!(
        finish(&hb.on_message(welcome_a.clone())),
        Some(Outcome::Established(_))
    ));
    (
        vec![hello_a, proof_a, welcome_a],
        vec![hello_b, proof_b, welcome_b],
    )
}

#[test]
fn doc_example_is_in_the_doc() {
    let (from_a, from_b) = doc_example();
    let doc = crate::mesh::tests::protocol_doc();
    for msg in from_a.iter().chain(&from_b) {
        let json = msg.to_json();
        assert!(doc.contains(&json), "docs/mesh-protocol.md lacks {json}");
    }
    // The transcript A signs, in hex.
    let (a, b) = (node(1), node(2));
    let t = transcript(&[0xbb; 32], &[0xaa; 32], a.node_id(), b.node_id());
    let t_hex = crate::mesh::wire::tests::spaced(&t);
    assert!(
        doc.contains(&t_hex),
        "docs/mesh-protocol.md lacks transcript {t_hex}"
    );
    // And the first frame on the wire, A's hello.
    let frame = crate::mesh::wire::encode_control(&from_a[0]);
    let head = crate::mesh::wire::tests::spaced(&frame[..16]);
    assert!(
        doc.contains(&head),
        "docs/mesh-protocol.md lacks frame head {head}"
    );
}

/// Prints every example docs/mesh-protocol.md quotes:
/// `cargo test --lib print_doc_examples -- --ignored --nocapture`.
#[test]
#[ignore = "prints the documentation examples"]
fn print_doc_examples() {
    use crate::mesh::wire::{self, tests::spaced};
    let (from_a, from_b) = doc_example();
    let (a, b) = (node(1), node(2));
    println!("node A = {}\nnode B = {}", a.node_id(), b.node_id());
    println!("A public key = {}", spaced(&a.public_key_bytes()));
    for (who, msgs) in [("A", &from_a), ("B", &from_b)] {
        for m in msgs.iter() {
            println!("{who}: {}", m.to_json());
        }
    }
    let t = transcript(&[0xbb; 32], &[0xaa; 32], a.node_id(), b.node_id());
    println!("transcript A signs ({} bytes):\n{}", t.len(), spaced(&t));
    let frame = wire::encode_control(&from_a[0]);
    println!("hello frame ({} bytes):\n{}", frame.len(), spaced(&frame));
    println!(
        "ping: {}",
        spaced(&wire::encode_control(&Control::Ping { t: 42 }))
    );
    println!(
        "welcome: {}",
        spaced(&wire::encode_control(&Control::Welcome {}))
    );
    let step1 = crate::protocol::encode_sync_step1(&[0x00]);
    println!("room: {}", spaced(&wire::encode_room("notes", &step1)));
    let manifest = Control::Manifest {
        rooms: vec![wire::ManifestEntry {
            name: "notes".into(),
            digest: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d".into(),
        }],
        complete: true,
    };
    println!("manifest: {}", manifest.to_json());
    println!(
        "refused: {}",
        Control::Refused {
            reason: HandshakeError::VersionMismatch { theirs: 2, ours: 1 }.to_string()
        }
        .to_json()
    );
}
