//! OCSF output checked by an independent validator: the official OCSF
//! schema (shipped by `ocsf-json-schema` from `PyPI`) through `jsonschema`,
//! over a fixed sample of every event kind and over what a real daemon with
//! `[output] format = "ocsf"` writes and `vigil watch --format ocsf` prints.

use std::{
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use vigil::ocsf::{samples, to_ocsf};
use vigil_tests::{Daemon, DnsServer, kernel_available, ocsf_validate, workload_bin};

/// Every kind Vigil emits.
const EVERY_KIND: &[&str] = &[
    "exec",
    "fork",
    "exit",
    "connect",
    "accept",
    "file_open",
    "file_link",
    "dns_answer",
    "dns_query",
    "anomaly",
    "loss",
    "session_start",
    "revocation",
    "restore",
    "task_approved",
    "task_ended",
    "config_change",
    "gap",
    "io_uring",
    "socket",
    "unix_connect",
    "session_escape",
    "sensor_tampered",
];

fn write_lines(dir: &tempfile::TempDir, records: &[Value]) -> std::path::PathBuf {
    let path = dir.path().join("ocsf.jsonl");
    let mut text = String::new();
    for r in records {
        text.push_str(&r.to_string());
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn sample_records() -> Vec<Value> {
    samples::all()
        .iter()
        .map(|e| serde_json::to_value(to_ocsf(e, "node-1")).unwrap())
        .collect()
}

#[test]
fn a_sample_of_every_kind_is_valid_ocsf() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_lines(&dir, &sample_records());
    let (ok, report) = ocsf_validate(&path, EVERY_KIND);
    assert!(ok, "{report}");
    eprintln!("{report}");
}

/// What a broken mapping would do to a record, and how.
type Breakage = (&'static str, fn(&mut Value));

#[test]
fn the_ocsf_validator_rejects_broken_mappings() {
    let dir = tempfile::tempdir().unwrap();
    let breakages: &[Breakage] = &[
        ("an activity the class lacks", |r| {
            r["activity_id"] = 42.into();
            r["type_uid"] = (r["class_uid"].as_u64().unwrap() * 100 + 42).into();
        }),
        ("type_uid of another class", |r| {
            r["type_uid"] = 100_101.into();
        }),
        ("no severity_id", |r| {
            r.as_object_mut().unwrap().remove("severity_id");
        }),
        ("an attribute outside the class", |r| {
            r["agent_identity"] = "coder".into();
        }),
        ("time as a string", |r| {
            r["time"] = "2026-12-02T12:00:00Z".into();
        }),
        ("a device type that does not exist", |r| {
            r["device"]["type_id"] = 77.into();
        }),
        ("no profile for actor and device", |r| {
            r["metadata"]["profiles"] = serde_json::json!([]);
        }),
    ];
    let records = sample_records();
    // The connect (Network Activity) needs the host profile for its actor.
    let connect = records
        .iter()
        .find(|r| r["unmapped"]["vigil"]["kind"] == "connect")
        .unwrap();
    for (what, breakage) in breakages {
        let mut r = connect.clone();
        breakage(&mut r);
        let path = write_lines(&dir, &[r]);
        let (ok, report) = ocsf_validate(&path, &[]);
        assert!(!ok, "the validator accepted {what}:\n{report}");
    }
    // A kind that never appears fails too.
    let path = write_lines(&dir, std::slice::from_ref(connect));
    let (ok, report) = ocsf_validate(&path, &["connect", "gap"]);
    assert!(!ok && report.contains("missing kinds: gap"), "{report}");
}

fn kind(r: &Value) -> &str {
    r["unmapped"]["vigil"]["kind"].as_str().unwrap_or("")
}

fn ocsf_records(d: &Daemon) -> Vec<Value> {
    // events() parses the file's lines; OCSF records are JSON lines too.
    d.events()
}

fn wait_kinds(d: &Daemon, kinds: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records = ocsf_records(d);
        let missing: Vec<_> = kinds
            .iter()
            .filter(|k| !records.iter().any(|r| kind(r) == **k))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no OCSF record of {missing:?} after 30 s:\n{}\ndaemon log:\n{}",
            d.dump(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The kinds a daemon makes from real activity. `loss` and `gap` need a
/// flooded ring buffer and a pruned journal, and the daemon reports a
/// reload in its log, not yet as a `config_change` event: the sample covers
/// those three.
const LIVE_KINDS: &[&str] = &[
    "exec",
    "fork",
    "exit",
    "connect",
    "accept",
    "file_open",
    "file_link",
    "dns_answer",
    "dns_query",
    "anomaly",
    "session_start",
    "revocation",
    "restore",
    "task_approved",
    "task_ended",
];

#[test]
fn a_daemon_writes_valid_ocsf_for_every_kind() {
    if !kernel_available() {
        return;
    }
    let target = Ipv4Addr::new(127, 0, 0, 9);
    let listener = TcpListener::bind((target, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let agents = format!(
        r#"format = "ocsf"

[[agent]]
name = "coder"
owner = "tests@example.com"
on_violation = "alert"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1:53", "udp://127.0.0.1:53", "api.test.internal:{port}", "127.0.0.1"]
  tools = ["/**"]
  data = ["everything"]

[[agent]]
name = "tasked"
owner = "tests@example.com"
require_approval = true
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.0/8"]
  tools = ["/**"]

[data.everything]
read = ["/**"]
write = ["/**"]
"#
    );
    let mut d = Daemon::start(&agents);
    let wl = workload_bin().display().to_string();

    // exec, fork, exit, file_open, file_link, session_start.
    let scratch = d.dir.path().join("scratch");
    let out = d.exec(
        "coder",
        "s-proc",
        &[
            "/bin/sh",
            "-c",
            &format!(
                "/bin/cat /etc/hostname; ln -s /etc/hostname {}; true",
                scratch.display()
            ),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    // dns_answer and the connect to the learnt address, in scope.
    let dns = DnsServer::start(target);
    let out = d.exec(
        "coder",
        "s-dns",
        &[
            &wl,
            "dns-connect",
            "127.0.0.1:53",
            "api.test.internal",
            &port.to_string(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    drop(dns);
    // A connect out of scope: an anomaly with the connect as its evidence.
    let out = d.exec(
        "coder",
        "s-out",
        &[&wl, "connect", &format!("127.0.0.2:{port}")],
    );
    drop(out);
    // accept, attributed to the listening session.
    let mut child = Command::new(vigil_tests::vigil_bin())
        .args([
            "exec",
            "--agent",
            "coder",
            "--session",
            "s-accept",
            "--",
            &wl,
            "accept-once",
            "127.0.0.1:0",
        ])
        .env("VIGIL_SOCKET", &d.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: std::net::SocketAddr = line.trim().parse().unwrap();
    drop(TcpStream::connect(addr).unwrap());
    child.wait().unwrap();
    // Governance: revocation, restore, task approval and its end.
    d.vigil_ok(&[
        "revoke",
        "coder",
        "--session",
        "s-proc",
        "--reason",
        "ocsf test",
    ]);
    d.vigil_ok(&[
        "restore",
        "coder",
        "--session",
        "s-proc",
        "--reason",
        "reviewed",
    ]);
    d.vigil_ok(&[
        "approve",
        "tasked",
        "--task",
        "T-1",
        "--purpose",
        "ocsf",
        "--ttl",
        "30s",
    ]);
    d.vigil_ok(&["end-task", "tasked", "--task", "T-1"]);
    wait_kinds(&d, LIVE_KINDS);
    let (valid, report) = ocsf_validate(&d.events_path, LIVE_KINDS);
    assert!(valid, "{report}\nrecords:\n{}", d.dump());
    eprintln!("daemon output: {report}");

    let records = ocsf_records(&d);
    let exec = records
        .iter()
        .find(|r| kind(r) == "exec" && r["unmapped"]["vigil"]["session"] == "s-proc")
        .expect("exec of s-proc");
    assert_eq!(exec["class_uid"], 1007);
    assert_eq!(exec["actor"]["app_name"], "coder");
    assert_eq!(exec["actor"]["session"]["uid"], "s-proc");
    assert!(
        exec["device"]["hostname"]
            .as_str()
            .is_some_and(|h| !h.is_empty())
    );

    // The CLI converts what the API streams the same way.
    let out = d.vigil(&["watch", "--oldest", "--format", "ocsf", "--count", "40"]);
    assert!(out.status.success(), "{out:?}");
    let path = d.dir.path().join("watch.jsonl");
    std::fs::write(&path, &out.stdout).unwrap();
    let (valid, report) = ocsf_validate(&path, &["session_start", "exec"]);
    assert!(valid, "vigil watch --format ocsf: {report}");
    d.stop();
    drop(listener);
}
