//! Tests of the `ymesh` binary as a process: ready line, signals, config errors.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ymesh"))
}

#[test]
fn version_flag_prints_the_version() {
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), format!("ymesh {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn serve_logs_ready_line_and_exits_zero_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("ymesh-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = bin()
        .args(["serve", "--port", "0"])
        .current_dir(&dir)
        .env("RUST_LOG", "info")
        .env_remove("HOST")
        .env_remove("PORT")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let port: u16 = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("ready line in time");
        if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
            break rest.trim().parse().expect("port number");
        }
    };
    assert_ne!(port, 0);
    assert_ne!(port, 3913, "--port 0 picks a free port");
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("node accepts connections");
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "exit after SIGTERM in time");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_config_fails_naming_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("ymesh-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "port = 1\n[limits]\nmax_roms = 5\n").unwrap();
    let out = bin()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3:1"), "{err}");
    assert!(err.contains("max_roms"), "{err}");
    let out = bin()
        .args(["serve", "--config"])
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.toml"), "{err}");
    assert_eq!(
        err.matches("No such file").count(),
        1,
        "cause printed once: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = bin()
        .args(["serve", "--memory", "--port", &port])
        .env_remove("HOST")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

/// Starts `ymesh serve` with `args`/`env`, returns (child, ready line, port).
fn serve_until_ready(
    args: &[&str],
    env: &[(&str, &str)],
    dir: &std::path::Path,
) -> (std::process::Child, String, u16) {
    let mut cmd = bin();
    cmd.arg("serve").args(args).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    crate::common::spawn_until_ready(cmd)
}

fn stop(mut child: std::process::Child) {
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ymesh-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = scratch("json");
    let (child, line, port) =
        serve_until_ready(&["--port", "0", "--log-format", "json"], &[], &dir);
    let v: serde_json::Value = serde_json::from_str(&line).expect("ready line is JSON");
    assert_eq!(v["level"], "INFO");
    assert_eq!(
        v["fields"]["message"],
        format!("listening on http://127.0.0.1:{port}")
    );
    stop(child);
}

#[test]
fn flag_beats_env_beats_file() {
    let dir = scratch("prec");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    std::fs::write(dir.join("mesh.toml"), format!("port = {taken_port}\n")).unwrap();
    // ./mesh.toml is read by default: its (taken) port makes start fail ...
    let out = bin()
        .arg("serve")
        .current_dir(&dir)
        .env_remove("PORT")
        .env_remove("HOST")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&taken_port));
    // ... PORT overrides the file ...
    let (child, _, port) = serve_until_ready(&[], &[("PORT", "0")], &dir);
    assert_ne!(port.to_string(), taken_port);
    stop(child);
    // ... and --port overrides PORT.
    let (child, _, port) = serve_until_ready(&["--port", "0"], &[("PORT", &taken_port)], &dir);
    assert_ne!(port.to_string(), taken_port);
    stop(child);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn planned_flags_are_refused_naming_the_feature() {
    let out = bin()
        .args(["serve", "--memory", "--port", "0", "--tls-cert", "cert.pem"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-cert") && err.contains("TLS"), "{err}");
}

#[test]
fn id_prints_a_stable_node_id_that_the_node_uses() {
    let dir = scratch("id");
    let first = bin().args(["id", "--data-dir"]).arg(&dir).output().unwrap();
    assert!(first.status.success(), "{first:?}");
    let id = String::from_utf8_lossy(&first.stdout).trim().to_string();
    assert!(id.starts_with("12D3KooW"), "{id}");
    let again = bin().args(["id", "--data-dir"]).arg(&dir).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), id);
    let (child, _, port) = serve_until_ready(
        &["--port", "0", "--data-dir", dir.to_str().unwrap()],
        &[],
        &dir,
    );
    let body = http_get(port, "/");
    assert!(body.contains(&id), "GET / shows the same id: {body}");
    stop(child);
    let _ = std::fs::remove_dir_all(&dir);
}

fn http_get(port: u16, path: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_, body) = runtime.block_on(crate::common::http(
        ([127, 0, 0, 1], port).into(),
        "GET",
        path,
    ));
    String::from_utf8_lossy(&body).into_owned()
}

#[test]
fn status_prints_the_nodes_peers_and_rooms() {
    let dir = scratch("status");
    let (child, _, port) = serve_until_ready(
        &["--port", "0", "--data-dir", dir.to_str().unwrap()],
        &[],
        &dir,
    );
    let out = bin()
        .args(["status", "--node", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.starts_with("node 12D3KooW"), "{text}");
    assert!(
        text.contains("peers (0)") && text.contains("rooms (0)"),
        "{text}"
    );
    // `ymesh rooms` lists a room once it has content.
    let import = bin()
        .args([
            "import",
            "listed",
            "-",
            "--node",
            &format!("http://127.0.0.1:{port}"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            // A Yjs v1 update inserting "x" into root text "t" (client 1).
            let update = [1u8, 1, 1, 0, 4, 1, 1, b't', 1, b'x', 0];
            c.stdin.take().unwrap().write_all(&update)?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(import.status.success(), "{import:?}");
    let out = bin()
        .args(["rooms", "--node", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.starts_with("rooms (1)"), "{text}");
    assert!(text.contains("listed"), "{text}");
    stop(child);
    let out = bin()
        .args(["status", "--node", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a stopped node is an error");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_type_error_in_the_config_names_the_key_and_the_expected_type() {
    let dir = scratch("type-error");
    std::fs::write(dir.join("mesh.toml"), "port = \"abc\"\n").unwrap();
    let out = bin()
        .args(["serve", "--memory"])
        .current_dir(&dir)
        .env_remove("PORT")
        .env_remove("HOST")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mesh.toml:1:8: `port`: invalid type: string \"abc\"")
            && err.contains("expected an integer from 0 to 65535"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_taken_port_leaves_no_store_and_no_node_key_behind() {
    let dir = scratch("taken-clean");
    let data = dir.join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = bin()
        .args(["serve", "--port", &port, "--data-dir"])
        .arg(&data)
        .env_remove("HOST")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        !data.exists(),
        "a failed start created {}: {:?}",
        data.display(),
        std::fs::read_dir(&data).map(|d| d.count())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_data_dir_that_is_a_file_is_said_in_a_sentence() {
    let dir = scratch("dir-is-file");
    let file = dir.join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    for (args, path) in [
        (vec!["serve", "--port", "0"], file.clone()),
        (vec!["serve", "--port", "0"], file.join("below")),
        (vec!["id"], file.clone()),
    ] {
        let out = bin()
            .args(&args)
            .arg("--data-dir")
            .arg(&path)
            .env_remove("HOST")
            .env_remove("PORT")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("is a file, not a directory"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("os error"), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts `ymesh serve` with `args` in `dir`; returns the child, every log line up to and
/// including the ready line, and the port.
fn serve_collecting(
    args: &[&str],
    dir: &std::path::Path,
) -> (std::process::Child, Vec<String>, u16) {
    let mut child = bin()
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .env_remove("HOST")
        .env_remove("PORT")
        .env_remove("YMESH_DATA_DIR")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            let status = child.wait();
            panic!("no ready line in time; the node exited with {status:?}: {lines:#?}");
        };
        let port = line
            .split("listening on http://127.0.0.1:")
            .nth(1)
            .map(|rest| rest.trim().parse::<u16>().expect("port number"));
        lines.push(line);
        if let Some(port) = port {
            return (child, lines, port);
        }
    }
}

#[test]
fn store_opened_is_logged_once() {
    let dir = scratch("store-once");
    let (child, lines, _) = serve_collecting(&["--port", "0", "--data-dir", "data"], &dir);
    stop(child);
    let opened = lines.iter().filter(|l| l.contains("store opened")).count();
    assert_eq!(opened, 1, "{lines:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn status_rooms_and_command_find_the_node_from_mesh_toml() {
    let dir = scratch("status-config");
    let (child, _, port) = serve_collecting(&["--port", "0", "--data-dir", "data"], &dir);
    // Another directory whose mesh.toml names the node's host and port.
    let client_dir = dir.join("client");
    std::fs::create_dir_all(&client_dir).unwrap();
    std::fs::write(
        client_dir.join("mesh.toml"),
        format!("host = \"0.0.0.0\"\nport = {port}\n"),
    )
    .unwrap();
    for args in [
        vec!["status"],
        vec!["rooms"],
        vec!["command", "reindex", "--wait"],
    ] {
        let out = bin().args(&args).current_dir(&client_dir).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.is_empty(), "{args:?}");
    }
    // --config names the file from anywhere.
    let out = bin()
        .args(["status", "--config"])
        .arg(client_dir.join("mesh.toml"))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("node 12D3KooW"));
    // A config with port 0 cannot name a running node: said so.
    std::fs::write(client_dir.join("mesh.toml"), "port = 0\n").unwrap();
    let out = bin()
        .arg("status")
        .current_dir(&client_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("port = 0") && err.contains("--node"), "{err}");
    stop(child);
    let _ = std::fs::remove_dir_all(&dir);
}

fn help_of(sub: &str) -> String {
    let out = bin().args([sub, "--help"]).output().unwrap();
    assert!(out.status.success(), "ymesh {sub} --help: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// README's command lines name real subcommands and flags, and its sentence on where each
/// operations command runs (data directory, running node, or both) is what the flags say.
#[test]
fn readme_cli_claims_are_true() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut checked = 0;
    let mut in_sh = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        let code = line.split(" #").next().unwrap_or_default();
        // `ymesh ...`, or `VAR=... ymesh ...`; not `cargo run ...`.
        let Some(rest) = code
            .strip_prefix("ymesh ")
            .or_else(|| code.split_once("' ymesh ").map(|(_, r)| r))
            .or_else(|| code.split_once("... ymesh ").map(|(_, r)| r))
        else {
            continue;
        };
        if !in_sh {
            continue;
        }
        let mut words = rest.split_whitespace();
        let sub = words.next().unwrap();
        let help = help_of(sub);
        for flag in words.filter(|w| w.starts_with("--")) {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "README uses `ymesh {sub} {flag}`, which `ymesh {sub} --help` does not list"
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "README command lines found: {checked}");
    assert!(readme.contains(
        "`export`, `import`, `compact` and `delete` work on a stopped node's data directory"
    ));
    for sub in ["export", "import", "compact", "delete"] {
        let help = help_of(sub);
        assert!(
            help.contains("--data-dir ") && help.contains("--node "),
            "{sub}"
        );
    }
    assert!(readme.contains("`backup`, `restore-backup` and `id` take the data directory only"));
    for sub in ["backup", "restore-backup", "id"] {
        let help = help_of(sub);
        assert!(
            help.contains("--data-dir ") && !help.contains("--node "),
            "{sub}"
        );
    }
    assert!(readme.contains("`status`, `rooms` and `command` ask a running node: `--node URL`, or else the\nhost and port of ./mesh.toml (`--config PATH`"));
    for sub in ["status", "rooms", "command"] {
        let help = help_of(sub);
        assert!(
            help.contains("--node ") && help.contains("--config ") && !help.contains("--data-dir"),
            "{sub}"
        );
    }
}
