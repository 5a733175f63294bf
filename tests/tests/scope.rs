//! Agent scope and anomalies, against the real kernel with a real
//! daemon: each kind of anomaly is triggered by a real action.

// Paths are written into TOML with `{:?}` (a quoted, escaped string), and
// small helpers sit next to the steps that use them.
#![allow(clippy::unnecessary_debug_formatting, clippy::items_after_statements)]

use std::{
    net::{Ipv4Addr, TcpListener},
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;
use vigil_tests::{Daemon, DnsServer, kernel_available, workload_bin};

fn wl() -> String {
    workload_bin().to_str().unwrap().to_owned()
}

/// A coding agent: its workspace, loopback systems, a DNS name, and a short
/// tool list. `secrets` is a data class it was not given.
fn config(root: &Path, dns_port: u16, on_violation: &str, extra_tools: &str) -> String {
    let r = root.display();
    format!(
        r#"
[scope]
aggregate_window_seconds = 1

[[agent]]
name = "coder"
on_violation = "{on_violation}"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1", "[::1]", "udp://127.0.0.1:53", "api.test.internal:{dns_port}"]
  tools = ["{wl}", "/bin/sh", "/usr/bin/sh", "/usr/bin/dash", "/bin/true", "/usr/bin/true"{extra_tools}]
  data = ["workspace"]

[data.workspace]
read = ["{r}/ws/**"]
write = ["{r}/ws/**"]

[data.secrets]
read = ["{r}/secrets/**"]
write = ["{r}/secrets/**"]
"#,
        wl = wl(),
    )
}

/// A daemon whose config is written after its temp dir exists (paths in the
/// config point into it).
fn start(on_violation: &str, extra_tools: &str, dns_port: u16) -> Daemon {
    let mut d = Daemon::start_fn(|root| config(root, dns_port, on_violation, extra_tools), "");
    let root = d.dir.path().to_owned();
    for dir in ["ws", "secrets", "elsewhere", "proj"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("ws/notes.txt"), "in scope").unwrap();
    std::fs::write(root.join("secrets/key.txt"), "secret").unwrap();
    std::fs::write(root.join("proj/.env"), "TOKEN=1").unwrap();
    assert!(d.alive());
    d
}

fn anomalies(d: &Daemon, session: &str) -> Vec<Value> {
    d.events()
        .into_iter()
        .filter(|e| e["kind"] == "anomaly" && e["identity"]["session"] == session)
        .collect()
}

#[test]
fn in_scope_work_produces_no_anomaly() {
    if !kernel_available() {
        return;
    }
    let d = start("alert", "", 1);
    let root = d.dir.path();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let ws = root.join("ws");
    let script = format!(
        "{wl} open {ws}/notes.txt && {wl} create {ws}/out.txt && {wl} connect {addr} && /bin/true",
        wl = wl(),
        ws = ws.display(),
        addr = l.local_addr().unwrap()
    );
    let out = d.exec("coder", "s-ok", &["/bin/sh", "-c", &script]);
    assert!(out.status.success(), "{out:?}");
    d.settle();
    std::thread::sleep(Duration::from_millis(1200));
    d.settle();
    let found = anomalies(&d, "s-ok");
    assert!(
        found.is_empty(),
        "in-scope work raised anomalies: {found:#?}"
    );
    assert!(
        d.events()
            .iter()
            .any(|e| e["kind"] == "connect" && e["identity"]["session"] == "s-ok"),
        "the work was observed"
    );
}

/// Runs `cmd` in a fresh session and returns the single anomaly it raised.
fn one_anomaly(d: &Daemon, session: &str, cmd: &[&str]) -> Value {
    let _ = d.exec("coder", session, cmd);
    let first = d.wait_for(&format!("anomaly of {session}"), |e| {
        e["kind"] == "anomaly" && e["identity"]["session"] == session
    });
    d.settle();
    let all = anomalies(d, session);
    assert_eq!(all.len(), 1, "exactly one anomaly: {all:#?}");
    assert_eq!(all[0]["count"], 1);
    first
}

#[test]
fn each_anomaly_kind_is_reported_once_with_its_reason() {
    if !kernel_available() {
        return;
    }
    let d = start("alert", "", 1);
    let root = d.dir.path().to_owned();

    let a = one_anomaly(&d, "s-tool", &["/usr/bin/id"]);
    assert_eq!(a["anomaly"], "unapproved_tool");
    assert_eq!(a["action"], "observed");
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .starts_with("exec of /usr/bin/id"),
        "{a}"
    );
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .ends_with("is outside tools of coder")
    );
    assert_eq!(a["offending"]["kind"], "exec");
    assert_eq!(a["identity"]["agent"], "coder");

    let l = TcpListener::bind("127.0.0.2:0").unwrap();
    let addr = l.local_addr().unwrap();
    let a = one_anomaly(&d, "s-net", &[&wl(), "connect", &addr.to_string()]);
    assert_eq!(a["anomaly"], "unapproved_system");
    assert_eq!(
        a["reason"],
        format!(
            "connect to 127.0.0.2:{} is outside systems of coder",
            addr.port()
        )
    );

    let target = root.join("elsewhere/x.txt");
    let a = one_anomaly(&d, "s-write", &[&wl(), "create", target.to_str().unwrap()]);
    assert_eq!(a["anomaly"], "data_outside_scope");
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .contains(target.to_str().unwrap()),
        "{a}"
    );

    let secret = root.join("secrets/key.txt");
    let a = one_anomaly(&d, "s-read", &[&wl(), "open", secret.to_str().unwrap()]);
    assert_eq!(a["anomaly"], "data_outside_scope");
    assert!(a["reason"].as_str().unwrap().contains("secrets"), "{a}");

    let env = root.join("proj/.env");
    let a = one_anomaly(&d, "s-cred", &[&wl(), "open", env.to_str().unwrap()]);
    assert_eq!(a["anomaly"], "identity_outside_scope");
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["identity_name"], "dotenv");
}

#[test]
fn connect_to_an_address_learnt_from_an_allowed_name_is_in_scope() {
    if !kernel_available() {
        return;
    }
    let target = Ipv4Addr::new(127, 0, 0, 9);
    let l = TcpListener::bind((target, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let d = start("alert", "", port);
    let _dns = DnsServer::start(target);
    let out = d.exec(
        "coder",
        "s-dns",
        &[
            &wl(),
            "dns-connect",
            "127.0.0.1:53",
            "api.test.internal",
            &port.to_string(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let answer = d.wait_for("dns answer", |e| {
        e["kind"] == "dns_answer" && e["identity"]["session"] == "s-dns"
    });
    assert_eq!(answer["name"], "api.test.internal");
    assert_eq!(answer["addresses"][0], "127.0.0.9");
    d.wait_for("connect to the learnt address", |e| {
        e["kind"] == "connect" && e["address"] == "127.0.0.9" && e["port"] == port
    });
    d.settle();
    let found = anomalies(&d, "s-dns");
    assert!(found.is_empty(), "{found:#?}");

    // The same name does not cover an address it did not resolve to.
    let other = TcpListener::bind("127.0.0.10:0").unwrap();
    let a = one_anomaly(
        &d,
        "s-dns2",
        &[&wl(), "connect", &other.local_addr().unwrap().to_string()],
    );
    assert_eq!(a["anomaly"], "unapproved_system");
}

#[test]
fn a_broken_config_on_reload_leaves_the_old_one_running() {
    if !kernel_available() {
        return;
    }
    let d = start("alert", r#", "/usr/bin/id""#, 1);
    std::fs::write(&d.config_path, "[[agent]\nname = ").unwrap();
    wait_status(&d, "1 failed");
    let _ = d.exec("coder", "s-still", &["/usr/bin/id"]);
    d.settle();
    assert!(
        anomalies(&d, "s-still").is_empty(),
        "old config (id allowed) still applies"
    );
    // A valid change is picked up.
    let root = d.dir.path().to_owned();
    std::fs::write(
        &d.config_path,
        d.full_config(&config(&root, 1, "alert", "")),
    )
    .unwrap();
    wait_status(&d, "1 reloads");
    let a = one_anomaly(&d, "s-new", &["/usr/bin/id"]);
    assert_eq!(a["anomaly"], "unapproved_tool");
}

fn wait_status(d: &Daemon, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = d.vigil(&["status"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed {needle:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn on_violation_kill_kills_the_offending_process() {
    if !kernel_available() {
        return;
    }
    let d = start("kill", "", 1);
    let started = Instant::now();
    let out = d.exec(
        "coder",
        "s-kill",
        &["/bin/sh", "-c", "exec /usr/bin/sleep 30"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the out-of-scope sleep was not killed"
    );
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    let a = d.wait_for("kill anomaly", |e| {
        e["kind"] == "anomaly" && e["identity"]["session"] == "s-kill"
    });
    assert_eq!(a["anomaly"], "unapproved_tool");
    assert_eq!(a["action"], "killed");
}
