//! mDNS discovery between two network namespaces on a bridge (tests/it/common/netns.rs).
//!
//! Multicast never leaves the namespaces this test makes: each source runs on a thread that
//! has entered its namespace before starting the `mdns-sd` daemon (whose thread inherits
//! it). The test needs root and `ip`; without them, or where namespaces cannot be made, it
//! says so and passes without checking anything, except under `CI=true`, where it fails.

use std::time::Duration;

use crate::common::netns::lan_or_skip;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use ymesh::mesh::discovery::{spawn_mdns, Discovered, DiscoveryEvent, DiscoverySource, MdnsConfig};
use ymesh::mesh::NodeIdentity;

/// Runs an mDNS source inside network namespace `ns` on its own thread and runtime until
/// `cancel` fires.
fn run_in(
    ns: &str,
    cfg: MdnsConfig,
    tx: mpsc::Sender<DiscoveryEvent>,
    cancel: CancellationToken,
) -> std::thread::JoinHandle<Result<(), String>> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        use std::os::fd::AsRawFd;
        // SAFETY: a valid namespace fd; this changes only the calling thread's namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let handle = spawn_mdns(cfg, tx, cancel).map_err(|e| e.to_string())?;
            handle.join().await;
            Ok(())
        })
    })
}

async fn next(rx: &mut mpsc::Receiver<DiscoveryEvent>, what: &str) -> DiscoveryEvent {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no mDNS event within 20 s: {what}"))
        .unwrap_or_else(|| panic!("mDNS source stopped: {what}"))
}

#[tokio::test]
async fn two_namespaces_find_each_other_and_notice_a_goodbye() {
    let Some(lan) = lan_or_skip(2, 2, "the mDNS namespace test") else {
        return;
    };
    let id_a = NodeIdentity::ephemeral().node_id().to_string();
    let id_b = NodeIdentity::ephemeral().node_id().to_string();
    let (tx_a, mut rx_a) = mpsc::channel(16);
    let (tx_b, mut rx_b) = mpsc::channel(16);
    let (cancel_a, cancel_b) = (CancellationToken::new(), CancellationToken::new());
    let node_a = run_in(
        &lan.hosts[0],
        MdnsConfig::new(id_a.clone(), 4001),
        tx_a,
        cancel_a.clone(),
    );
    let node_b = run_in(
        &lan.hosts[1],
        MdnsConfig::new(id_b.clone(), 4002),
        tx_b,
        cancel_b.clone(),
    );

    // Each finds the other, once, and never itself.
    assert_eq!(
        next(&mut rx_a, "A finds B").await,
        DiscoveryEvent::Found(Discovered {
            node_id: Some(id_b.clone()),
            url: "http://10.78.2.2:4002".into(),
            source: DiscoverySource::Mdns,
        })
    );
    assert_eq!(
        next(&mut rx_b, "B finds A").await,
        DiscoveryEvent::Found(Discovered {
            node_id: Some(id_a.clone()),
            url: "http://10.78.2.1:4001".into(),
            source: DiscoverySource::Mdns,
        })
    );

    // B stops: its goodbye reaches A as Lost (after the 1 s grace that RFC 6762 gives a
    // goodbye), with nothing in between despite the re-announcements meanwhile.
    cancel_b.cancel();
    let b_done = tokio::task::spawn_blocking(move || node_b.join());
    assert_eq!(
        next(&mut rx_a, "A loses B").await,
        DiscoveryEvent::Lost {
            node_id: Some(id_b),
            url: "http://10.78.2.2:4002".into(),
            source: DiscoverySource::Mdns,
        }
    );
    let b_result = tokio::time::timeout(Duration::from_secs(10), b_done)
        .await
        .expect("B stops within 10 s");
    b_result.unwrap().unwrap().unwrap();

    cancel_a.cancel();
    let a_result = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || node_a.join()),
    )
    .await
    .expect("A stops within 10 s");
    a_result.unwrap().unwrap().unwrap();
    assert!(rx_b.recv().await.is_none(), "B reported nothing more");
    drop(lan);
}
