//! The API from an independent client: Python's `grpcio` from the package
//! index, with stubs generated from `proto/vigil/v1` at test time, on the
//! local socket with no channel options and over TLS with a client
//! certificate. The client side is `tests/python/vigil_client_test.py`; the
//! pinned packages are `tests/python/requirements.txt`, installed into a
//! venv under `target/python/` when it is missing or its pins changed.

// Paths are written into TOML with `{:?}` (a quoted, escaped string).
#![allow(clippy::unnecessary_debug_formatting)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use vigil_tests::{CODER_AGENT, Daemon, Served, kernel_available};

const EPERM: &str = "err 1";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace")
        .to_owned()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The venv's python, with the pinned packages installed.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let pins = std::fs::read_to_string(repo().join("tests/python/requirements.txt"))
            .expect("tests/python/requirements.txt");
        // The test binary is target/<profile>/deps/NAME.
        let exe = std::env::current_exe().expect("test binary path");
        let target = exe
            .ancestors()
            .nth(3)
            .expect("the test binary is under target/");
        let venv = target.join("python/venv");
        let stamp = venv.join("vigil-requirements.txt");
        let bin = venv.join("bin/python");
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(pins.as_str()) && bin.exists() {
            return bin;
        }
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(&bin)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                "-r",
            ])
            .arg(repo().join("tests/python/requirements.txt")));
        std::fs::write(&stamp, &pins).expect("venv stamp");
        bin
    })
}

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

/// A CA that signs the server's and the client's certificates.
struct Ca {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    pem: String,
}

impl Ca {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "vigil python test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    /// Writes `NAME.crt` and `NAME.key` into `dir` for `cn`.
    fn issue(&self, dir: &Path, name: &str, cn: &str, server: bool) -> (PathBuf, PathBuf) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if server {
            params.subject_alt_names = vec![
                rcgen::SanType::DnsName("localhost".try_into().unwrap()),
                rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()),
            ];
        }
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
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
