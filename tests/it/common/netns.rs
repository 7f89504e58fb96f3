//! Network namespaces for tests that need real hosts (mDNS, which must never leave them).
//!
//! [`Lan::create`] makes one namespace per host plus a "switch" namespace holding a bridge,
//! joins each host to the bridge with a veth pair and gives it `10.78.N.i/24`; dropping the
//! `Lan` deletes every namespace it made (which also removes the veth pairs). Nothing is
//! added to the namespace the test runs in, so multicast from the hosts stays on the bridge.

use std::process::Command;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Hosts on one private bridge, each in its own network namespace.
pub struct Lan {
    /// Host namespaces, in order.
    pub hosts: Vec<String>,
    /// The switch namespace (holds the bridge).
    switch: String,
    /// Third octet of the subnet.
    net: u8,
}

impl Lan {
    /// Why this machine cannot make namespaces, if it cannot (not root, no `ip`).
    pub fn unavailable() -> Option<String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("it needs root to create network namespaces".into());
        }
        if Command::new("ip").arg("-V").output().is_err() {
            return Some("the `ip` command (iproute2) is missing".into());
        }
        None
    }

    /// Creates `n` hosts on a bridge. `net` picks the subnet `10.78.net.0/24` so that tests
    /// running at the same time do not clash.
    pub fn create(n: usize, net: u8) -> Result<Lan, String> {
        let pid = std::process::id();
        let mut lan = Lan {
            hosts: Vec::new(),
            switch: format!("ymt{pid}-{net}-sw"),
            net,
        };
        // On failure `lan` is dropped, deleting whatever was made so far.
        ip(&["netns", "add", &lan.switch])?;
        ip(&["-n", &lan.switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &lan.switch, "link", "set", "br0", "up"])?;
        for i in 1..=n {
            let host = format!("ymt{pid}-{net}-h{i}");
            ip(&["netns", "add", &host])?;
            lan.hosts.push(host.clone());
            // Interface names: at most 15 bytes, unique per test run.
            let (vh, vs) = (
                format!("y{}{net}h{i}", pid % 100_000),
                format!("y{}{net}s{i}", pid % 100_000),
            );
            ip(&["link", "add", &vh, "type", "veth", "peer", "name", &vs])?;
            ip(&["link", "set", &vh, "netns", &host])?;
            ip(&["link", "set", &vs, "netns", &lan.switch])?;
            ip(&["-n", &lan.switch, "link", "set", &vs, "master", "br0"])?;
            ip(&["-n", &lan.switch, "link", "set", &vs, "up"])?;
            let addr = format!("{}/24", lan.addr(i - 1));
            ip(&["-n", &host, "addr", "add", &addr, "dev", &vh])?;
            ip(&["-n", &host, "link", "set", "lo", "up"])?;
            ip(&["-n", &host, "link", "set", &vh, "up"])?;
        }
        Ok(lan)
    }

    /// The address of host `i` (0-based).
    pub fn addr(&self, i: usize) -> String {
        format!("10.78.{}.{}", self.net, i + 1)
    }

    /// Runs `f` on a thread inside host `i`'s network namespace, with its own runtime.
    pub fn run_in<T: Send + 'static, F>(
        &self,
        i: usize,
        f: impl FnOnce() -> F + Send + 'static,
    ) -> T
    where
        F: std::future::Future<Output = T>,
    {
        let path = format!("/run/netns/{}", self.hosts[i]);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            use std::os::fd::AsRawFd;
            // SAFETY: a valid namespace fd; this changes only the calling thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f())
        })
        .join()
        .expect("thread in namespace")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = ip(&["netns", "del", h]);
        }
        let _ = ip(&["netns", "del", &self.switch]);
    }
}

/// The namespaces this test needs, or `None` (after saying why) when the machine cannot
/// make them. Under `CI=true` a missing capability fails the test instead.
pub fn lan_or_skip(n: usize, net: u8, test: &str) -> Option<Lan> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if let Some(why) = Lan::unavailable() {
        assert!(!ci, "{test}: cannot run under CI=true: {why}");
        eprintln!("skipping {test}: {why}");
        return None;
    }
    match Lan::create(n, net) {
        Ok(lan) => Some(lan),
        Err(e) => {
            assert!(
                !ci,
                "{test}: cannot create network namespaces under CI=true: {e}"
            );
            eprintln!("skipping {test}: cannot create network namespaces: {e}");
            None
        }
    }
}
