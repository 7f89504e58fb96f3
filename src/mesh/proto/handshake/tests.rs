use super::*;
use crate::mesh::proto::approval::AdmittedBy;

const A: &str = "12D3KooWNodeA";
const B: &str = "12D3KooWNodeB";

fn binding(remote: &str, role: Role) -> Binding {
    Binding {
        remote: remote.into(),
        hash: [0x5a; 32],
        role,
    }
}

/// A handshake pair over one channel: `a` dialed `b`.
fn pair(secret_a: Option<&str>, secret_b: Option<&str>) -> (Handshake, Handshake) {
    (
        Handshake::new(A, "boot-a", None, binding(B, Role::Initiator), secret_a),
        Handshake::new(B, "boot-b", None, binding(A, Role::Responder), secret_b),
    )
}

fn sends(actions: &[Action]) -> Vec<Control> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn authenticated(actions: &[Action]) -> Option<Authenticated> {
    actions.iter().find_map(|a| match a {
        Action::Authenticated(x) => Some(x.clone()),
        _ => None,
    })
}

fn finish(actions: &[Action]) -> Option<Outcome> {
    actions.iter().find_map(|a| match a {
        Action::Finish(o) => Some(o.clone()),
        _ => None,
    })
}

/// Runs both sides until each is authenticated, delivering messages in order; returns each
/// side's secret check and every message each sent.
fn authenticate(a: &mut Handshake, b: &mut Handshake) -> (SecretCheck, SecretCheck) {
    let mut to_b = sends(&a.start());
    let mut to_a = sends(&b.start());
    let (mut auth_a, mut auth_b) = (None, None);
    for _ in 0..4 {
        let mut next_b = Vec::new();
        for m in to_b.drain(..) {
            let acts = b.on_message(m);
            auth_b = auth_b.or(authenticated(&acts));
            next_b.extend(sends(&acts));
        }
        let mut next_a = Vec::new();
        for m in to_a.drain(..) {
            let acts = a.on_message(m);
            auth_a = auth_a.or(authenticated(&acts));
            next_a.extend(sends(&acts));
        }
        to_a = next_b;
        to_b = next_a;
    }
    let (a, b) = (
        auth_a.expect("a authenticated"),
        auth_b.expect("b authenticated"),
    );
    assert_eq!(a.node_id, B);
    assert_eq!(b.node_id, A);
    (a.secret, b.secret)
}

/// Both verdicts Welcome: both establish with the same link tag.
fn welcome_both(a: &mut Handshake, b: &mut Handshake) -> (PeerInfo, PeerInfo) {
    let wa = a.verdict(Verdict::Welcome(AdmittedBy::Open));
    let wb = b.verdict(Verdict::Welcome(AdmittedBy::Open));
    assert!(finish(&wa).is_none() && finish(&wb).is_none());
    let ea = sends(&wb)
        .into_iter()
        .flat_map(|m| a.on_message(m))
        .collect::<Vec<_>>();
    let eb = sends(&wa)
        .into_iter()
        .flat_map(|m| b.on_message(m))
        .collect::<Vec<_>>();
    match (finish(&ea), finish(&eb)) {
        (Some(Outcome::Established(x)), Some(Outcome::Established(y))) => (x, y),
        other => panic!("not established: {other:?}"),
    }
}

#[test]
fn without_secrets_both_sides_authenticate_and_establish() {
    let (mut a, mut b) = pair(None, None);
    assert_eq!(
        authenticate(&mut a, &mut b),
        (SecretCheck::NotConfigured, SecretCheck::NotConfigured)
    );
    let (x, y) = welcome_both(&mut a, &mut b);
    assert_eq!(x.node_id, B);
    assert_eq!(y.node_id, A);
    assert_eq!(x.boot_id, "boot-b");
    assert_eq!(x.link_tag, y.link_tag);
    assert_eq!(x.link_tag, vec![0x5a; 32]);
}

#[test]
fn the_same_secret_is_proven_both_ways() {
    let (mut a, mut b) = pair(Some("correct horse"), Some("correct horse"));
    assert_eq!(
        authenticate(&mut a, &mut b),
        (SecretCheck::Proven, SecretCheck::Proven)
    );
}

#[test]
fn different_secrets_fail_both_ways() {
    let (mut a, mut b) = pair(Some("correct horse"), Some("battery staple"));
    assert_eq!(
        authenticate(&mut a, &mut b),
        (SecretCheck::Wrong, SecretCheck::Wrong)
    );
}

#[test]
fn a_secret_on_one_side_only_is_missing_there() {
    let (mut a, mut b) = pair(Some("correct horse"), None);
    assert_eq!(
        authenticate(&mut a, &mut b),
        (SecretCheck::Missing, SecretCheck::NotConfigured)
    );
}

/// The same secret, but the two sides run over different channels (a relay splicing two
/// connections): the SPAKE2 identities and confirmations differ, nothing is proven.
#[test]
fn a_secret_proof_is_bound_to_its_channel() {
    let mut a = Handshake::new(A, "a", None, binding(B, Role::Initiator), Some("s"));
    let mut other = binding(A, Role::Responder);
    other.hash = [0x11; 32];
    let mut b = Handshake::new(B, "b", None, other, Some("s"));
    assert_eq!(
        authenticate(&mut a, &mut b),
        (SecretCheck::Wrong, SecretCheck::Wrong)
    );
}

/// A peer's confirmation sent back to it (reflection) does not verify: the role differs.
#[test]
fn a_reflected_confirmation_is_rejected() {
    let (mut a, _) = pair(Some("s"), Some("s"));
    let hello_a = sends(&a.start());
    let Control::Hello { pake, .. } = hello_a[0].clone() else {
        panic!()
    };
    // The peer's hello carries A's own SPAKE2 message back; then A's own proof.
    let back = Control::Hello {
        version: MESH_PROTOCOL_VERSION,
        node_id: B.into(),
        boot_id: "b".into(),
        listen: None,
        pake,
    };
    let proof = sends(&a.on_message(back));
    let acts = a.on_message(proof[0].clone());
    assert_eq!(authenticated(&acts).unwrap().secret, SecretCheck::Wrong);
}

/// Everything a node sends a stranger (who holds no secret and guesses) before being
/// admitted is its hello (with its SPAKE2 message) and its confirmation. A dictionary that
/// contains the real secret, run offline over those messages, must not find it: each guess
/// would have needed its own online run. (The previous handshake sent HMAC(secret,
/// transcript) to any stranger, and this search found the secret at once.)
#[test]
fn a_stranger_cannot_test_guesses_offline() {
    let secret = "correct horse";
    let mut node = Handshake::new(A, "a", None, binding(B, Role::Responder), Some(secret));
    let mut stranger = Handshake::new(B, "b", None, binding(A, Role::Initiator), Some("guess"));
    let node_hello = sends(&node.start());
    let stranger_hello = sends(&stranger.start());
    let node_proof = sends(&node.on_message(stranger_hello[0].clone()));
    let (
        Control::Hello {
            pake: Some(node_pake),
            ..
        },
        Control::Proof { mac },
    ) = (node_hello[0].clone(), node_proof[0].clone())
    else {
        panic!("the node sends its hello and a proof")
    };
    let node_pake = hex::decode(&node_pake).unwrap();
    let mac = hex::decode(&mac).unwrap();
    let dictionary = ["guess", "password", secret, "correct  horse", "hunter2"];
    for guess in dictionary {
        // The stranger's best offline move: a fresh SPAKE2 run for the guess against the
        // node's recorded message, and a check of the node's confirmation.
        let (s, _) = Spake2::<Ed25519Group>::start_symmetric(
            &Password::new(guess.as_bytes()),
            &Identity::new(&[0x5a; 32]),
        );
        let key = s.finish(&node_pake).unwrap();
        assert!(
            !confirmation_ok(&key, Role::Responder, &[0x5a; 32], &mac),
            "guess {guess:?} verified offline"
        );
    }
}

#[test]
fn a_pending_peer_is_welcomed_on_approval() {
    let (mut a, mut b) = pair(None, None);
    authenticate(&mut a, &mut b);
    // A holds B as pending; B welcomes A.
    let pa = a.verdict(Verdict::Pending("new device".into()));
    assert_eq!(
        sends(&pa),
        vec![Control::Pending {
            reason: "new device".into()
        }]
    );
    assert!(a.is_waiting_for_approval());
    let wb = b.verdict(Verdict::Welcome(AdmittedBy::Configured));
    let at_b: Vec<Action> = sends(&pa)
        .into_iter()
        .flat_map(|m| b.on_message(m))
        .collect();
    assert_eq!(at_b, vec![Action::PeerPending("new device".into())]);
    assert!(b.is_waiting_for_approval());
    let at_a: Vec<Action> = sends(&wb)
        .into_iter()
        .flat_map(|m| a.on_message(m))
        .collect();
    assert!(finish(&at_a).is_none(), "A has not welcomed B yet");
    // Approval.
    let approved = a.verdict(Verdict::Welcome(AdmittedBy::Approved));
    assert!(matches!(finish(&approved), Some(Outcome::Established(_))));
    let at_b: Vec<Action> = sends(&approved)
        .into_iter()
        .flat_map(|m| b.on_message(m))
        .collect();
    assert!(matches!(finish(&at_b), Some(Outcome::Established(_))));
}

#[test]
fn a_refusal_reaches_the_peer_with_its_reason() {
    let (mut a, mut b) = pair(None, None);
    authenticate(&mut a, &mut b);
    let ra = a.verdict(Verdict::Refuse("denied".into()));
    assert_eq!(
        finish(&ra),
        Some(Outcome::Refused(HandshakeError::NotAdmitted(
            "denied".into()
        )))
    );
    let at_b: Vec<Action> = sends(&ra)
        .into_iter()
        .flat_map(|m| b.on_message(m))
        .collect();
    assert_eq!(finish(&at_b), Some(Outcome::RefusedByPeer("denied".into())));
}

#[test]
fn a_hello_for_another_node_than_the_channel_proved_is_refused() {
    let (mut a, _) = pair(None, None);
    a.start();
    let acts = a.on_message(Control::Hello {
        version: MESH_PROTOCOL_VERSION,
        node_id: "12D3KooWSomeoneElse".into(),
        boot_id: "x".into(),
        listen: None,
        pake: None,
    });
    assert!(matches!(
        finish(&acts),
        Some(Outcome::Refused(HandshakeError::NodeIdMismatch { .. }))
    ));
}

#[test]
fn another_version_is_refused_by_name() {
    let (mut a, _) = pair(None, None);
    let acts = a.on_message(Control::Hello {
        version: 9,
        node_id: B.into(),
        boot_id: "x".into(),
        listen: None,
        pake: None,
    });
    assert_eq!(
        finish(&acts),
        Some(Outcome::Refused(HandshakeError::VersionMismatch {
            theirs: 9,
            ours: MESH_PROTOCOL_VERSION
        }))
    );
}

#[test]
fn out_of_order_messages_are_protocol_errors() {
    for msg in [
        Control::Welcome {},
        Control::Proof { mac: "00".into() },
        Control::Pending { reason: "x".into() },
    ] {
        let (mut a, _) = pair(None, None);
        let acts = a.on_message(msg);
        assert!(
            matches!(
                finish(&acts),
                Some(Outcome::Refused(HandshakeError::Unexpected { .. }))
            ),
            "{acts:?}"
        );
    }
    // A verdict before authentication does nothing.
    let (mut a, _) = pair(None, None);
    assert!(a.verdict(Verdict::Welcome(AdmittedBy::Open)).is_empty());
}

#[test]
fn unknown_and_liveness_messages_are_ignored() {
    let (mut a, mut b) = pair(None, None);
    let hello_a = sends(&a.start());
    assert!(a.on_message(Control::Ping { t: 1 }).is_empty());
    assert!(a.on_message(Control::Unknown).is_empty());
    let hello_b = sends(&b.start());
    let at_b = b.on_message(hello_a[0].clone());
    let at_a = a.on_message(hello_b[0].clone());
    assert!(authenticated(&at_a).is_some() && authenticated(&at_b).is_some());
}

/// The in-channel messages of docs/mesh-protocol.md section 5.4, built by the code.
fn doc_example() -> Vec<Control> {
    use crate::mesh::identity::NodeIdentity;
    use crate::mesh::proto::approval::{self, AdmissionPolicy, Approvals};
    let a = NodeIdentity::from_secret_bytes([1; 32]);
    let b = NodeIdentity::from_secret_bytes([2; 32]);
    let (ida, idb) = (a.node_id().to_string(), b.node_id().to_string());
    let mut ha = Handshake::new(
        ida.clone(),
        "a1",
        Some("http://10.0.0.1:3913".into()),
        binding(&idb, Role::Initiator),
        None,
    );
    let mut hb = Handshake::new(idb, "b1", None, binding(&ida, Role::Responder), None);
    let mut out = sends(&ha.start());
    out.extend(sends(&hb.start()));
    let Verdict::Pending(reason) = approval::decide(
        &AdmissionPolicy::default(),
        &Approvals::default(),
        &ida,
        false,
        SecretCheck::NotConfigured,
    ) else {
        panic!("a new device waits")
    };
    out.push(Control::Welcome {});
    out.push(Control::Pending { reason });
    out
}

#[test]
fn doc_examples_are_in_the_doc() {
    let doc = crate::mesh::tests::protocol_doc();
    for msg in doc_example() {
        let json = msg.to_json();
        assert!(doc.contains(&json), "docs/mesh-protocol.md lacks {json}");
    }
}

/// Prints the in-channel handshake examples docs/mesh-protocol.md quotes:
/// `cargo test --lib print_doc_examples -- --ignored --nocapture`.
#[test]
#[ignore = "prints the documentation examples"]
fn print_doc_examples() {
    for m in doc_example() {
        println!("{}", m.to_json());
    }
}
