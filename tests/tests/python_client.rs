//! The API from an independent client: Python's `grpcio` from the package
//! index, with stubs generated from `proto/vigil/v1` at test time, on the
//! local socket with no channel options and over TLS with a client
//! certificate. The client side is `tests/python/vigil_client_test.py`; the
//! pinned packages are `tests/python/requirements.txt`, installed into a
//! venv under `target/python/` when it is missing or its pins changed.

// Paths are written into TOML with `{:?}` (a quoted, escaped string).
#![allow(clippy::unnecessary_debug_formatting)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use vigil_tests::pki::Ca;
use vigil_tests::python::{python, repo, run};
use vigil_tests::{CODER_AGENT, Daemon, Served, kernel_available};

const EPERM: &str = "err 1";

/// Generates the `vigil.v1` Python modules into a fresh directory.
fn stubs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let proto = repo().join("proto");
    let mut files: Vec<PathBuf> = std::fs::read_dir(proto.join("vigil/v1"))
        .expect("proto/vigil/v1")
        .map(|e| e.expect("proto entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    run(Command::new(python())
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto)
        .arg(format!("--python_out={}", dir.path().display()))
        .arg(format!("--grpc_python_out={}", dir.path().display()))
        .args(&files));
    dir
}

/// Runs one step of the Python client and returns its JSON report.
fn client(d: &Daemon, args: &[&str]) -> serde_json::Value {
    let stubs = stubs();
    let out = Command::new(python())
        .arg(repo().join("tests/python/vigil_client_test.py"))
        .args(args)
        .env("PYTHONPATH", stubs.path())
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python client failed ({}):\n{stdout}\n{}\ndaemon log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("report {stdout:?}: {e}"))
}

#[test]
fn grpcio_works_on_the_local_socket_without_options() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(CODER_AGENT);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let mut s = Served::start(&d, "coder", "s-py");
    assert_eq!(s.ask(&format!("connect {addr}")).as_deref(), Some("ok"));
    for i in 0..3 {
        let out = d.exec("coder", &format!("s-py-{i}"), &["/bin/true"]);
        assert!(out.status.success(), "{out:?}");
    }
    d.settle();

    let socket = d.socket.to_str().unwrap();
    let report = client(&d, &["local", socket, "s-py"]);
    let services = report["services"].as_array().unwrap();
    assert!(
        services.iter().any(|s| s == "vigil.v1.GovernanceService"),
        "{report}"
    );
    assert!(report["revocation"].as_u64().unwrap() > report["newest"].as_u64().unwrap());

    // The revocation grpcio made is in the kernel: the next connect fails.
    assert_eq!(s.ask(&format!("connect {addr}")).as_deref(), Some(EPERM));
    let by = d.wait_for("the revocation", |e| e["kind"] == "revocation");
    assert_eq!(by["session"], "s-py", "{by}");
}

#[test]
fn grpcio_works_over_tls_with_a_client_certificate() {
    if !kernel_available() {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_file = ca.write(pki.path());
    let (server_cert, server_key) = ca.issue(pki.path(), "server", "vigil-test-server", true);
    let (cert, key) = ca.issue(pki.path(), "reader", "siem-reader", false);
    let port = vigil_tests::kube::free_port();
    let d = Daemon::start(&format!(
        "{CODER_AGENT}\n[api]\nlisten = \"127.0.0.1:{port}\"\ncert = {server_cert:?}\nkey = {server_key:?}\nclient_ca = {ca_file:?}\n\
         [api.roles]\nsiem-reader = \"reader\"\n"
    ));
    let out = d.exec("coder", "s-tls", &["/bin/true"]);
    assert!(out.status.success(), "{out:?}");
    d.settle();

    let report = client(
        &d,
        &[
            "tls",
            &format!("localhost:{port}"),
            ca_file.to_str().unwrap(),
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
        ],
    );
    assert!(report["newest"].as_u64().unwrap() > 0, "{report}");
}

/// The Python subscriber of `docs/integrations.md`, the code block as it
/// is written there.
fn documented_subscriber() -> String {
    let doc = std::fs::read_to_string(repo().join("docs/integrations.md")).unwrap();
    let section = doc
        .split_once("## A Python subscriber")
        .expect("docs/integrations.md has the Python subscriber section")
        .1;
    let code = section.split_once("```python\n").expect("a python block").1;
    code.split_once("```").expect("the block ends").0.to_owned()
}

/// Runs the documented subscriber in `dir` until it has printed a line
/// for which `done` holds; its lines up to then.
fn follow(
    d: &Daemon,
    dir: &std::path::Path,
    stubs: &std::path::Path,
    done: impl Fn(&str) -> bool,
) -> Vec<String> {
    use std::io::BufRead as _;
    let mut child = Command::new(python())
        .arg("-c")
        .arg(documented_subscriber())
        .current_dir(dir)
        .env("PYTHONPATH", stubs)
        .env("VIGIL_SOCKET", &d.socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the documented subscriber");
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    // Ends at the program's end of output, once it is killed below.
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
    let mut lines = Vec::new();
    while let Ok(line) =
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        let found = done(&line);
        lines.push(line);
        if found {
            break;
        }
    }
    // The program saves its cursor just after printing each event: stop it
    // once it has saved the one looked for.
    let seq: u64 = lines
        .last()
        .and_then(|l| l.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    let saved = || {
        std::fs::read_to_string(dir.join("vigil.cursor"))
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while saved().is_none_or(|s| s < seq) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn the_documented_python_subscriber_works_as_written_and_resumes() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(CODER_AGENT);
    let out = d.exec("coder", "s-doc-1", &["/bin/true"]);
    assert!(out.status.success(), "{out:?}");
    d.settle();
    let stubs = stubs();
    let dir = tempfile::tempdir().unwrap();
    let first = follow(&d, dir.path(), stubs.path(), |l| {
        l.contains(" coder s-doc-1 exec")
    });
    assert!(
        first.iter().any(|l| l.contains(" coder s-doc-1 exec")),
        "{first:?}"
    );
    // With no cursor yet it starts at the journal's first event.
    assert!(first[0].starts_with("1 "), "{first:?}");
    // Where it stopped: the cursor it saved (it may have printed one
    // more event before it was killed, which it then prints again).
    let last: u64 = std::fs::read_to_string(dir.path().join("vigil.cursor"))
        .unwrap()
        .parse()
        .unwrap();

    // Run again: it goes on after the last event it handled.
    let out = d.exec("coder", "s-doc-2", &["/bin/true"]);
    assert!(out.status.success(), "{out:?}");
    let second = follow(&d, dir.path(), stubs.path(), |l| {
        l.contains(" coder s-doc-2 exec")
    });
    let resumed: u64 = second[0].split(' ').next().unwrap().parse().unwrap();
    assert_eq!(resumed, last + 1, "{second:?}");
}
