//! Revocation and task approvals enforced in the kernel, with a
//! real daemon and real processes.

// Paths are written into TOML with `{:?}` (a quoted, escaped string), and
// small helpers sit next to the steps that use them.
#![allow(clippy::unnecessary_debug_formatting, clippy::items_after_statements)]

use std::{
    net::TcpListener,
    time::{Duration, Instant},
};

use vigil_tests::{Daemon, DnsServer, Served, kernel_available, workload_bin};

const EPERM: &str = "err 1";

fn agents(extra: &str) -> String {
    let wl = workload_bin();
    format!(
        r#"
[scope]
aggregate_window_seconds = 1

[[agent]]
name = "coder"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.0/8", "[::1]"]
  tools = ["/**"]

[[agent]]
name = "other"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.0/8"]
  tools = ["/**"]
{extra}
"#,
    )
    .replace("WORKLOAD", wl.to_str().unwrap())
}

#[test]
fn revoke_blocks_connect_exec_and_open_until_restored() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(&agents(""));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let mut s = Served::start(&d, "coder", "s-rv");
    let mut other = Served::start(&d, "other", "s-other");
    assert_eq!(s.ask(&format!("connect {addr}")).as_deref(), Some("ok"));

    d.vigil_ok(&[
        "revoke",
        "coder",
        "--session",
        "s-rv",
        "--reason",
        "test revocation",
    ]);
    // Revoke returned: the very next syscall is refused.
    assert_eq!(s.ask(&format!("connect {addr}")).as_deref(), Some(EPERM));
    assert_eq!(s.ask(&format!("udp {addr}")).as_deref(), Some(EPERM));
    assert_eq!(s.ask("exec /bin/true").as_deref(), Some("signal 9"));
    // The new image never ran: `touch` would have made the file.
    let marker = d.dir.path().join("made-by-a-revoked-exec");
    let touch = if std::path::Path::new("/usr/bin/touch").exists() {
        "/usr/bin/touch"
    } else {
        "/bin/touch"
    };
    assert_eq!(
        s.ask(&format!("exec {touch} {}", marker.display()))
            .as_deref(),
        Some("signal 9")
    );
    assert!(!marker.exists(), "the revoked exec ran");
    // Other agents are unaffected (and `touch` does make the file).
    let made = d.dir.path().join("made-by-another-agent");
    assert_eq!(
        other
            .ask(&format!("exec {touch} {}", made.display()))
            .as_deref(),
        Some("exit 0")
    );
    assert!(made.exists());
    assert_eq!(other.ask(&format!("connect {addr}")).as_deref(), Some("ok"));
    assert_eq!(other.ask("exec /bin/true").as_deref(), Some("exit 0"));

    d.vigil_ok(&["restore", "coder", "--session", "s-rv", "--reason", "fixed"]);
    assert_eq!(s.ask(&format!("connect {addr}")).as_deref(), Some("ok"));
    assert_eq!(s.ask("exec /bin/true").as_deref(), Some("exit 0"));
    assert_eq!(s.ask("open /etc/hostname").as_deref(), Some("ok"));

    d.vigil_ok(&["revoke", "coder", "--reason", "whole agent"]);
    assert_eq!(s.ask("open /etc/hostname"), None, "the opener is killed");
    assert_eq!(s.wait_signal(), Some(9));

    let rev = d.wait_for("revocation event", |e| {
        e["kind"] == "revocation" && e["session"] == "s-rv"
    });
    assert_eq!(rev["reason"], "test revocation");
    assert!(rev["by"].as_str().unwrap().contains("uid 0"), "{rev}");
    d.wait_for("restore event", |e| e["kind"] == "restore");
    let blocked = d.wait_for("revoked activity", |e| {
        e["kind"] == "anomaly" && e["anomaly"] == "revoked_activity"
    });
    assert_eq!(blocked["action"], "blocked");
    d.wait_for("blocked connect event", |e| {
        e["kind"] == "connect" && e["blocked"] == true && e["identity"]["session"] == "s-rv"
    });
    let exec = d.wait_for("blocked exec event", |e| {
        e["kind"] == "exec" && e["blocked"] == true && e["identity"]["session"] == "s-rv"
    });
    assert_eq!(exec["filename"], "/bin/true", "{exec}");
    assert_eq!(exec["argv"], serde_json::json!(["/bin/true"]), "{exec}");
}

#[test]
fn on_violation_revoke_stops_what_follows_the_anomaly() {
    if !kernel_available() {
        return;
    }
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = allowed.local_addr().unwrap().port();
    let d = Daemon::start(&agents(&format!(
        r#"
[[agent]]
name = "strict"
on_violation = "revoke"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1:{port}"]
  tools = ["WORKLOAD", "/usr/bin/true", "/bin/true"]
"#
    )));
    let mut s = Served::start(&d, "strict", "s-strict");
    assert_eq!(
        s.ask(&format!("connect 127.0.0.1:{port}")).as_deref(),
        Some("ok")
    );
    // An out-of-scope tool: the anomaly revokes the session. The revocation
    // often lands before `id` has even loaded its libraries, killing it.
    let r = s.ask("exec /usr/bin/id");
    assert!(matches!(r.as_deref(), Some("exit 0" | "signal 9")), "{r:?}");
    let rev = d.wait_for("automatic revocation", |e| e["kind"] == "revocation");
    assert_eq!(rev["session"], "s-strict");
    assert!(rev["latency_ns"].as_u64().is_some(), "{rev}");
    assert!(rev["by"].as_str().unwrap().contains("on_violation"));
    let a = d.wait_for("anomaly", |e| {
        e["kind"] == "anomaly" && e["anomaly"] == "unapproved_tool"
    });
    assert_eq!(a["action"], "revoked");
    assert_eq!(
        s.ask(&format!("connect 127.0.0.1:{port}")).as_deref(),
        Some(EPERM)
    );
}

#[test]
fn enforced_systems_refuse_other_destinations_in_the_kernel() {
    if !kernel_available() {
        return;
    }
    let p1 = TcpListener::bind("127.0.0.1:0").unwrap();
    let p2 = TcpListener::bind("127.0.0.1:0").unwrap();
    let v6 = TcpListener::bind("[::1]:0").unwrap();
    let v6b = TcpListener::bind("[::1]:0").unwrap();
    let named = TcpListener::bind("127.0.0.9:0").unwrap();
    let unnamed = TcpListener::bind(("127.0.0.10", named.local_addr().unwrap().port())).unwrap();
    let port = |l: &TcpListener| l.local_addr().unwrap().port();
    let d = Daemon::start(&agents(&format!(
        r#"
[[agent]]
name = "fenced"
enforce = true
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1:{}", "[::1]:{}", "api.test.internal:{}", "udp://127.0.0.1:53"]
  tools = ["/**"]
"#,
        port(&p1),
        port(&v6),
        port(&named)
    )));
    let _dns = DnsServer::start("127.0.0.9".parse().unwrap());
    let mut s = Served::start(&d, "fenced", "s-fence");
    assert_eq!(
        s.ask(&format!("connect 127.0.0.1:{}", port(&p1)))
            .as_deref(),
        Some("ok")
    );
    assert_eq!(
        s.ask(&format!("connect 127.0.0.1:{}", port(&p2)))
            .as_deref(),
        Some(EPERM)
    );
    assert_eq!(
        s.ask(&format!("connect [::1]:{}", port(&v6))).as_deref(),
        Some("ok")
    );
    assert_eq!(
        s.ask(&format!("connect [::1]:{}", port(&v6b))).as_deref(),
        Some(EPERM)
    );
    // Before any answer, the name allows nothing.
    assert_eq!(
        s.ask(&format!("connect 127.0.0.9:{}", port(&named)))
            .as_deref(),
        Some(EPERM)
    );
    assert_eq!(
        s.ask("dns 127.0.0.1:53 api.test.internal").as_deref(),
        Some("ok 127.0.0.9")
    );
    d.wait_for("dns answer", |e| {
        e["kind"] == "dns_answer" && e["identity"]["session"] == "s-fence"
    });
    // The daemon loads the answer into the kernel; allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = s.ask(&format!("connect 127.0.0.9:{}", port(&named)));
        if r.as_deref() == Some("ok") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "learnt address never allowed: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The name does not cover an address it did not resolve to.
    assert_eq!(
        s.ask(&format!("connect 127.0.0.10:{}", port(&unnamed)))
            .as_deref(),
        Some(EPERM)
    );
    let a = d.wait_for("blocked anomaly", |e| {
        e["kind"] == "anomaly" && e["anomaly"] == "unapproved_system" && e["action"] == "blocked"
    });
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .contains("blocked in the kernel"),
        "{a}"
    );
}

#[test]
fn a_task_approval_expires_on_time_even_with_the_daemon_down() {
    if !kernel_available() {
        return;
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let mut d = Daemon::start(&agents(
        r#"
[[agent]]
name = "tasked"
require_approval = true
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.0/8"]
  tools = ["/**"]
"#,
    ));
    // Without an approval even the session's first exec is stopped.
    let out = d.exec("tasked", "s-none", &["/bin/true"]);
    assert!(!out.status.success());
    d.wait_for("unapproved task", |e| {
        e["kind"] == "anomaly" && e["anomaly"] == "unapproved_task"
    });

    let text = d.vigil_ok(&[
        "approve",
        "tasked",
        "--task",
        "T-1",
        "--purpose",
        "refactor",
        "--ttl",
        "3s",
    ]);
    assert!(text.contains("T-1"), "{text}");
    let mut s = Served::start(&d, "tasked", "s-task");
    assert_eq!(s.ask(&format!("connect {addr}")).as_deref(), Some("ok"));
    let e = d.wait_for("event with task id", |e| {
        e["kind"] == "connect" && e["identity"]["session"] == "s-task"
    });
    assert_eq!(e["identity"]["task"], "T-1");
    d.kill9();
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        s.ask(&format!("connect {addr}")).as_deref(),
        Some(EPERM),
        "expired with the daemon down"
    );
    d.spawn();
    d.vigil_ok(&[
        "approve",
        "tasked",
        "--task",
        "T-2",
        "--purpose",
        "again",
        "--ttl",
        "30s",
    ]);
    assert_eq!(s.ask(&format!("connect {addr}")).as_deref(), Some("ok"));
    d.vigil_ok(&["end-task", "tasked", "--task", "T-2"]);
    assert_eq!(s.ask(&format!("connect {addr}")).as_deref(), Some(EPERM));
}

#[test]
fn a_revocation_survives_kill_9_and_the_restarted_daemon_restores_it() {
    if !kernel_available() {
        return;
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let mut d = Daemon::start(&agents(""));
    let mut s = Served::start(&d, "coder", "s-crash");
    d.vigil_ok(&[
        "revoke",
        "coder",
        "--session",
        "s-crash",
        "--reason",
        "before crash",
    ]);
    d.kill9();
    assert_eq!(
        s.ask(&format!("connect {addr}")).as_deref(),
        Some(EPERM),
        "still revoked with no daemon"
    );
    d.spawn();
    assert_eq!(
        s.ask(&format!("connect {addr}")).as_deref(),
        Some(EPERM),
        "adopted after restart"
    );
    let agents = d.vigil_ok(&["agent", "coder"]);
    assert!(
        agents
            .lines()
            .any(|l| l.contains("s-crash") && l.contains("REVOKED")),
        "the restarted daemon knows the revocation:\n{agents}"
    );
    d.vigil_ok(&[
        "restore",
        "coder",
        "--session",
        "s-crash",
        "--reason",
        "after crash",
    ]);
    assert_eq!(s.ask(&format!("connect {addr}")).as_deref(), Some("ok"));
}

#[test]
fn a_task_approved_for_less_reports_what_goes_beyond_it() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(&agents(
        r#"
[[agent]]
name = "tasked"
require_approval = true
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.0/8"]
  tools = ["/**"]
"#,
    ));
    let wl = workload_bin();
    d.vigil_ok(&[
        "approve",
        "tasked",
        "--task",
        "T-narrow",
        "--purpose",
        "only the workload",
        "--ttl",
        "60s",
        "--tool",
        wl.to_str().unwrap(),
    ]);
    let mut s = Served::start(&d, "tasked", "s-narrow");
    assert_eq!(s.ask("exec /bin/true").as_deref(), Some("exit 0"));
    let a = d.wait_for("task-scope anomaly", |e| {
        e["kind"] == "anomaly" && e["identity"]["session"] == "s-narrow"
    });
    assert_eq!(a["anomaly"], "unapproved_tool");
    assert_eq!(a["identity"]["task"], "T-narrow");
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .ends_with("(the scope approved for task T-narrow)"),
        "{a}"
    );
    // A narrower scope that widens the agent's is refused.
    let out = d.vigil(&[
        "approve",
        "tasked",
        "--task",
        "T-bad",
        "--purpose",
        "x",
        "--ttl",
        "1m",
        "--data",
        "secrets",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not in the scope"),
        "{out:?}"
    );
}
