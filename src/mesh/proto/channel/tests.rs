use super::*;

fn node(n: u8) -> Arc<NodeIdentity> {
    Arc::new(NodeIdentity::from_secret_bytes([n; 32]))
}

/// Runs a whole handshake between `a` (dialing) and `b`; returns both channels.
fn pair(a: &Arc<NodeIdentity>, b: &Arc<NodeIdentity>) -> (Channel, Channel) {
    let (mut i, m1) = ChannelHandshake::initiator(a.clone(), 2, None).unwrap();
    let mut r = ChannelHandshake::responder(b.clone(), 2).unwrap();
    let Step::Send(m2) = r.on_message(&m1).unwrap() else {
        panic!("responder answers message 1")
    };
    let Step::Done {
        send: Some(m3),
        channel: ci,
    } = i.on_message(&m2).unwrap()
    else {
        panic!("initiator finishes on message 2")
    };
    let Step::Done {
        send: None,
        channel: cr,
    } = r.on_message(&m3).unwrap()
    else {
        panic!("responder finishes on message 3")
    };
    (*ci, *cr)
}

#[test]
fn both_sides_learn_each_others_node_id_and_share_one_hash() {
    let (a, b) = (node(1), node(2));
    let (ca, cb) = pair(&a, &b);
    assert_eq!(ca.remote, b.node_id());
    assert_eq!(cb.remote, a.node_id());
    assert_eq!(ca.role, Role::Initiator);
    assert_eq!(cb.role, Role::Responder);
    assert_eq!(ca.hash, cb.hash);
    // Fresh ephemeral and static keys: another connection of the same pair differs.
    let (ca2, _) = pair(&a, &b);
    assert_ne!(ca.hash, ca2.hash);
}

#[test]
fn frames_of_any_size_go_through_in_both_directions() {
    let (mut ca, mut cb) = pair(&node(1), &node(2));
    for len in [
        0,
        1,
        RECORD_PLAINTEXT - 1,
        RECORD_PLAINTEXT,
        RECORD_PLAINTEXT + 1,
        300_000,
    ] {
        let frame: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let sealed = ca.sealer.seal(&frame).unwrap();
        assert!(sealed.len() >= frame.len() + TAG_LEN);
        assert!(!sealed
            .windows(64)
            .any(|w| frame.len() >= 64 && w == &frame[..64]));
        assert_eq!(&cb.opener.open(&sealed).unwrap()[..], &frame[..]);
        let back = cb.sealer.seal(&frame).unwrap();
        assert_eq!(&ca.opener.open(&back).unwrap()[..], &frame[..]);
    }
}

#[test]
fn an_altered_replayed_reordered_or_truncated_record_is_rejected() {
    let (mut ca, mut cb) = pair(&node(1), &node(2));
    // Altered: every single bit flip in a sealed frame fails.
    let sealed = ca.sealer.seal(b"room data").unwrap();
    for i in 0..sealed.len() {
        let mut bad = sealed.to_vec();
        bad[i] ^= 0x01;
        let mut opener = Opener {
            transport: cb.opener.transport.clone(),
            nonce: cb.opener.nonce,
        };
        assert!(opener.open(&bad).is_err(), "bit flip at {i} accepted");
    }
    assert_eq!(&cb.opener.open(&sealed).unwrap()[..], b"room data");
    // Replayed: the same sealed frame a second time.
    assert!(cb.opener.open(&sealed).is_err());

    // Reordered: the second frame before the first.
    let (mut ca, mut cb) = pair(&node(1), &node(2));
    let one = ca.sealer.seal(b"one").unwrap();
    let two = ca.sealer.seal(b"two").unwrap();
    assert!(cb.opener.open(&two).is_err());
    let _ = one;

    // Truncated.
    let (mut ca, mut cb) = pair(&node(1), &node(2));
    let sealed = ca.sealer.seal(b"three").unwrap();
    assert!(cb.opener.open(&sealed[..sealed.len() - 1]).is_err());
    assert!(cb.opener.open(&[]).is_err());
}

#[test]
fn frames_from_another_connection_of_the_same_pair_do_not_open() {
    let (a, b) = (node(1), node(2));
    let (mut ca, _) = pair(&a, &b);
    let (_, mut cb2) = pair(&a, &b);
    let sealed = ca.sealer.seal(b"hello").unwrap();
    assert!(cb2.opener.open(&sealed).is_err());
}

#[test]
fn another_mesh_protocol_version_is_refused_by_name() {
    let (mut _i, m1) = ChannelHandshake::initiator(node(1), 3, None).unwrap();
    let mut r = ChannelHandshake::responder(node(2), 2).unwrap();
    assert_eq!(
        r.on_message(&m1).unwrap_err(),
        ChannelError::Version { theirs: 3, ours: 2 }
    );
}

#[test]
fn a_connection_to_itself_is_seen_by_both_sides() {
    let a = node(1);
    let (mut i, m1) = ChannelHandshake::initiator(a.clone(), 2, None).unwrap();
    let mut r = ChannelHandshake::responder(a.clone(), 2).unwrap();
    let Step::Send(m2) = r.on_message(&m1).unwrap() else {
        panic!()
    };
    assert!(matches!(
        i.on_message(&m2).unwrap_err(),
        ChannelError::SelfConnection { .. }
    ));
}

#[test]
fn the_dialer_refuses_a_node_other_than_the_expected_one_before_saying_who_it_is() {
    let (a, b, c) = (node(1), node(2), node(3));
    let (mut i, m1) = ChannelHandshake::initiator(a, 2, Some(c.node_id().to_string())).unwrap();
    let mut r = ChannelHandshake::responder(b.clone(), 2).unwrap();
    let Step::Send(m2) = r.on_message(&m1).unwrap() else {
        panic!()
    };
    assert_eq!(
        i.on_message(&m2).unwrap_err(),
        ChannelError::UnexpectedPeer {
            expected: c.node_id().to_string(),
            actual: b.node_id().to_string()
        }
    );
}

/// A relay that dials two nodes and passes one's answer to the other: both are responders,
/// and a responder's message is not an initiator's, so neither handshake completes.
#[test]
fn a_relay_between_two_responders_gets_nowhere() {
    let (a, c, attacker) = (node(1), node(3), node(9));
    let mut to_a = ChannelHandshake::responder(a, 2).unwrap();
    let mut to_c = ChannelHandshake::responder(c, 2).unwrap();
    let (_, m1) = ChannelHandshake::initiator(attacker, 2, None).unwrap();
    let Step::Send(from_a) = to_a.on_message(&m1).unwrap() else {
        panic!()
    };
    let Step::Send(_) = to_c.on_message(&m1).unwrap() else {
        panic!()
    };
    // C expects the initiator's third message; A's second one does not decrypt there.
    assert!(to_c.on_message(&from_a).is_err());
}

/// A node's own first message sent back to it.
#[test]
fn a_reflected_message_fails() {
    let (mut i, m1) = ChannelHandshake::initiator(node(1), 2, None).unwrap();
    assert!(i.on_message(&m1).is_err());
}

/// An attacker that completes the Noise handshake with its own keys but presents another
/// node's identity (a signature that node made over some other static key) is caught.
#[test]
fn an_identity_signed_for_another_static_key_does_not_verify() {
    let (a, victim) = (node(1), node(2));
    let (mut i, m1) = ChannelHandshake::initiator(a, 2, None).unwrap();
    let mut r = ChannelHandshake::responder(victim, 2).unwrap();
    // The victim's signature, but over a static key the attacker does not use.
    r.static_public = vec![7u8; 32];
    let Step::Send(m2) = r.on_message(&m1).unwrap() else {
        panic!()
    };
    assert!(matches!(
        i.on_message(&m2).unwrap_err(),
        ChannelError::Identity(_)
    ));
}

#[test]
fn a_man_in_the_middle_cannot_complete_as_either_node() {
    // M answers A's dial with its own keys: A learns it reached M, not B.
    let (a, m) = (node(1), node(6));
    let b = node(2);
    let (mut i, m1) = ChannelHandshake::initiator(a, 2, Some(b.node_id().to_string())).unwrap();
    let mut mr = ChannelHandshake::responder(m, 2).unwrap();
    let Step::Send(m2) = mr.on_message(&m1).unwrap() else {
        panic!()
    };
    assert!(matches!(
        i.on_message(&m2).unwrap_err(),
        ChannelError::UnexpectedPeer { .. }
    ));
}
