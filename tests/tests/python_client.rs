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
    let ca_file = pki.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let (server_cert, server_key) = ca.issue(pki.path(), "server", "vigil-test-server", true);
    let (cert, key) = ca.issue(pki.path(), "reader", "siem-reader", false);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
