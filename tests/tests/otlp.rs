//! `[[export]]` OTLP sinks against an independent receiver: the
//! OpenTelemetry project's Python protos served by grpcio
//! (`tests/python/otlp_receiver.py`), with plaintext and a header, and with
//! mTLS. What the receiver writes is compared with what the daemon
//! journaled: every event once, in every case.

// Paths are written into TOML with `{:?}` (a quoted, escaped string).
#![allow(clippy::unnecessary_debug_formatting)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil::wire::pb;
use vigil_tests::kube::free_port;
use vigil_tests::pki::Ca;
use vigil_tests::python::{python, repo};
use vigil_tests::{CODER_AGENT, Daemon, kernel_available};

const WAIT: Duration = Duration::from_secs(30);

/// A running receiver; killed (as a crashed collector would be) on drop.
struct Receiver {
    child: Child,
    out: PathBuf,
}

impl Receiver {
    fn start(port: u16, out: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(python())
            .arg(repo().join("tests/python/otlp_receiver.py"))
            .arg(port.to_string())
            .arg(out)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the OTLP receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("receiver output");
        assert_eq!(line.trim(), "ready", "the receiver did not start");
        Self {
            child,
            out: out.to_owned(),
        }
    }

    /// Every record received so far.
    fn records(&self) -> Vec<Value> {
        Self::read(&self.out)
    }

    /// The records a receiver wrote to `out`.
    fn read(out: &Path) -> Vec<Value> {
        std::fs::read_to_string(out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a receiver line"))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn seq(r: &Value) -> u64 {
    r["attributes"]["vigil.sequence"]
        .as_u64()
        .unwrap_or_else(|| panic!("no vigil.sequence in {r}"))
}

fn export_status(d: &Daemon, name: &str) -> pb::ExportStatus {
    let status = d.api().status().expect("status");
    status
        .exports
        .into_iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no export {name} in status"))
}

/// Waits until `done` holds for the sink's status.
fn wait_status(
    d: &Daemon,
    name: &str,
    what: &str,
    mut done: impl FnMut(&pb::ExportStatus) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = export_status(d, name);
        if done(&s) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "export {name}: {what} did not happen: {s:?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the sink has delivered everything journaled.
fn caught_up(d: &Daemon, name: &str) -> u64 {
    let mut newest = 0;
    wait_status(d, name, "catching up", |s| {
        newest = d.api().newest();
        s.lag == 0 && s.position >= newest && !s.failing
    });
    newest
}

/// Sequences received, in order, with each one's count.
fn counts(records: &[Value]) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(seq(r)).or_default() += 1;
    }
    m
}

fn sink(name: &str, endpoint: &str, extra: &str) -> String {
    format!(
        "[[export]]\nname = \"{name}\"\ntype = \"otlp\"\nendpoint = \"{endpoint}\"\nretry_max = \"300ms\"\ntimeout = \"2s\"\n{extra}\n"
    )
}

fn run_sessions(d: &Daemon, session: &str, n: usize) {
    for i in 0..n {
        let out = d.exec("coder", &format!("{session}-{i}"), &["/bin/true"]);
        assert!(out.status.success(), "{out:?}");
    }
    d.settle();
}

#[test]
fn a_collector_that_stops_gets_what_it_missed_exactly_once() {
    if !kernel_available() {
        return;
    }
    let port = free_port();
    let files = tempfile::tempdir().unwrap();
    let first = Receiver::start(
        port,
        &files.path().join("first.jsonl"),
        &["--header", "x-tenant=t1"],
    );
    let mut d = Daemon::start(&format!(
        "{CODER_AGENT}\n{}",
        sink(
            "siem",
            &format!("http://127.0.0.1:{port}"),
            "headers = { \"x-tenant\" = \"t1\" }"
        )
    ));
    run_sessions(&d, "s-up", 3);
    let before = caught_up(&d, "siem");

    // Every journaled event, once, with its body as the daemon wrote it.
    let got = first.records();
    let c = counts(&got);
    let first_out = first.out.clone();
    assert_eq!(
        c.keys().copied().collect::<Vec<_>>(),
        (1..=before).collect::<Vec<_>>(),
        "sequences received"
    );
    assert!(c.values().all(|n| *n == 1), "{c:?}");
    let written: BTreeMap<u64, Value> = d
        .events()
        .into_iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e))
        .collect();
    for r in &got {
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert_eq!(written.get(&seq(r)), Some(&body), "record {r}");
        assert_eq!(r["metadata"]["x-tenant"], "t1");
        assert_eq!(r["resource"]["service.name"], "vigil");
        assert_eq!(
            r["event_name"],
            format!("vigil.{}", body["kind"].as_str().unwrap())
        );
        if body["identity"]["agent"] == "coder" {
            assert_eq!(r["attributes"]["gen_ai.agent.name"], "coder", "{r}");
            assert_eq!(
                r["attributes"]["vigil.session"],
                body["identity"]["session"]
            );
        }
    }

    // The collector goes away; the daemon keeps journaling and retries.
    drop(first);
    let first_count = Receiver::read(&first_out).len();
    run_sessions(&d, "s-down", 3);
    let missed_to = d.api().newest();
    wait_status(&d, "siem", "failing while the collector is down", |s| {
        s.failing && s.retries > 0 && s.lag > 0 && !s.error.is_empty()
    });
    assert_eq!(Receiver::read(&first_out).len(), first_count);
    let text = d.vigil_ok(&["status"]);
    assert!(text.contains("export    siem otlp"), "{text}");
    assert!(text.contains("FAILING"), "{text}");

    // Back on the same address: what it missed arrives, once.
    let second = Receiver::start(
        port,
        &files.path().join("second.jsonl"),
        &["--header", "x-tenant=t1"],
    );
    let after = caught_up(&d, "siem");
    assert!(after >= missed_to);
    // Together, the two collectors have every event once (the first took
    // what was delivered before it was killed).
    let delivered = |second: &Receiver| {
        let mut all = Receiver::read(&files.path().join("first.jsonl"));
        all.extend(second.records());
        counts(&all)
    };
    let c2 = delivered(&second);
    assert_eq!(
        c2.keys().copied().collect::<Vec<_>>(),
        (1..=after).collect::<Vec<_>>(),
        "sequences received by both collectors"
    );
    assert!(c2.values().all(|n| *n == 1), "{c2:?}");
    assert!(
        second
            .records()
            .iter()
            .any(|r| seq(r) > before && seq(r) <= missed_to),
        "the second collector got what the first missed"
    );

    // A daemon restart resumes from the saved cursor: nothing again.
    d.stop();
    d.spawn();
    run_sessions(&d, "s-restart", 1);
    let last = caught_up(&d, "siem");
    let c3 = delivered(&second);
    assert_eq!(
        c3.keys().copied().collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>(),
        "sequences received after the daemon's restart"
    );
    assert!(c3.values().all(|n| *n == 1), "{c3:?}");

    // The sink's figures are Prometheus series too.
    let status = export_status(&d, "siem");
    assert!(status.exported > 0 && status.error.is_empty(), "{status:?}");
}

#[test]
fn a_sink_delivers_ocsf_over_mtls_and_one_without_a_client_certificate_says_why() {
    if !kernel_available() {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_file = ca.write(pki.path());
    let (server_cert, server_key) = ca.issue(pki.path(), "collector", "collector", true);
    let (cert, key) = ca.issue(pki.path(), "vigil", "vigil-node-7", false);
    let port = free_port();
    let receiver = Receiver::start(
        port,
        &pki.path().join("records.jsonl"),
        &[
            "--tls",
            ca_file.to_str().unwrap(),
            server_cert.to_str().unwrap(),
            server_key.to_str().unwrap(),
        ],
    );
    let endpoint = format!("https://localhost:{port}");
    let metrics = free_port();
    let d = Daemon::start(&format!(
        "{CODER_AGENT}\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n{}{}",
        sink(
            "mtls",
            &endpoint,
            &format!("format = \"ocsf\"\nca = {ca_file:?}\ncert = {cert:?}\nkey = {key:?}")
        ),
        sink("no-cert", &endpoint, &format!("ca = {ca_file:?}")),
    ));
    run_sessions(&d, "s-tls", 2);
    let newest = caught_up(&d, "mtls");
    let got: Vec<Value> = receiver
        .records()
        .into_iter()
        .filter(|r| r["peer_cn"][0] == "vigil-node-7")
        .collect();
    let c = counts(&got);
    assert_eq!(
        c.keys().copied().collect::<Vec<_>>(),
        (1..=newest).collect::<Vec<_>>()
    );
    for r in &got {
        let ocsf: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert!(ocsf["class_uid"].as_u64().is_some(), "{ocsf}");
        assert_eq!(
            ocsf["metadata"]["sequence"].as_u64(),
            Some(seq(r)),
            "{ocsf}"
        );
        assert_eq!(ocsf["metadata"]["version"], "1.5.0");
    }

    // The collector refuses the sink without a client certificate: it
    // delivers nothing, says why, and the daemon goes on.
    wait_status(&d, "no-cert", "failing without a client certificate", |s| {
        s.failing && s.retries > 0 && s.exported == 0 && !s.error.is_empty()
    });
    let text = vigil_tests::kube::scrape(format!("127.0.0.1:{metrics}").parse().unwrap())
        .expect("metrics");
    assert_eq!(
        vigil_tests::kube::count(&text, "vigil_export_records_total{sink=\"mtls\"}"),
        Some(export_status(&d, "mtls").exported),
        "{text}"
    );
    assert!(
        vigil_tests::kube::count(&text, "vigil_export_retries_total{sink=\"no-cert\"}")
            .is_some_and(|n| n > 0),
        "{text}"
    );
    assert!(
        vigil_tests::kube::sample(&text, "vigil_export_lag_events{sink=\"no-cert\"}")
            .is_some_and(|n| n > 0.0),
        "{text}"
    );
}

#[test]
fn a_bad_endpoint_is_a_clear_error_and_the_daemon_keeps_running() {
    if !kernel_available() {
        return;
    }
    let closed = free_port();
    let d = Daemon::start(&format!(
        "{CODER_AGENT}\n{}{}",
        sink("closed", &format!("http://127.0.0.1:{closed}"), ""),
        sink("nowhere", "http://collector.invalid:4317", ""),
    ));
    run_sessions(&d, "s-bad", 2);
    for name in ["closed", "nowhere"] {
        wait_status(&d, name, "an error", |s| {
            s.failing && s.retries > 1 && !s.error.is_empty()
        });
    }
    let closed_error = export_status(&d, "closed").error;
    assert!(
        closed_error.contains("refused") || closed_error.contains("connect"),
        "{closed_error}"
    );
    // Journaling, the event file and the API go on as before.
    let exec = d.wait_for("an exec of the last session", |e| {
        e["kind"] == "exec" && e["identity"]["session"] == "s-bad-1"
    });
    assert!(exec["seq"].as_u64().unwrap() > 0);
    assert!(d.vigil_ok(&["status"]).contains("export    nowhere otlp"));

    // A reload that points the sink at a collector that is up delivers
    // everything from the sink's cursor, which never moved.
    let files = tempfile::tempdir().unwrap();
    let port = free_port();
    let receiver = Receiver::start(port, &files.path().join("records.jsonl"), &[]);
    let tmp = d.config_path.with_extension("toml.new");
    std::fs::write(
        &tmp,
        d.full_config(&format!(
            "{CODER_AGENT}\n{}{}",
            sink("closed", &format!("http://127.0.0.1:{port}"), ""),
            sink("nowhere", "http://collector.invalid:4317", ""),
        )),
    )
    .unwrap();
    std::fs::rename(&tmp, &d.config_path).unwrap();
    wait_status(&d, "closed", "the new endpoint", |s| {
        s.endpoint.ends_with(&format!(":{port}"))
    });
    let newest = caught_up(&d, "closed");
    let c = counts(&receiver.records());
    assert_eq!(
        c.keys().copied().collect::<Vec<_>>(),
        (1..=newest).collect::<Vec<_>>()
    );
    assert!(c.values().all(|n| *n == 1), "{c:?}");
    assert!(export_status(&d, "nowhere").failing);

    // A config naming an endpoint that is no endpoint is refused, with where.
    let bad = d.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        d.full_config(&format!(
            "{CODER_AGENT}\n{}",
            sink("x", "ftp://collector:4317", "batch = 0")
        )),
    )
    .unwrap();
    let out = Command::new(vigil_tests::vigil_bin())
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("export[0].endpoint"), "{err}");
    assert!(err.contains("http:// or https://"), "{err}");
    assert!(err.contains("export[0].batch"), "{err}");
}
