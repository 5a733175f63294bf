//! A session reaching for its governor, as an attacker with root inside an
//! agent session would: signal the daemon, trace it, read its memory, take
//! a pidfd of it, open its pinned maps with `bpf()`, write its state
//! directory, its config file or its `/proc` entry. Each runs twice against
//! a real daemon and the real kernel: from an observed agent, where the call
//! succeeds and is reported, and from an enforced one, where the caller does
//! not live to see the call return.

use std::{os::unix::process::ExitStatusExt as _, process::Output};

use serde_json::Value;
use vigil_tests::{Daemon, kernel_available, of, workload_bin};

fn wl() -> String {
    workload_bin().to_str().unwrap().to_owned()
}

/// Two agents with the same wide scope: one observed, one enforced.
fn agents() -> String {
    format!("{}{AGENTS}", vigil_tests::CODER_AGENT)
}

const AGENTS: &str = r#"
[scope]
aggregate_window_seconds = 1

[[agent]]
name = "observed"
on_violation = "alert"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.0/8"]
  tools = ["/**"]
  data = ["all"]

[[agent]]
name = "enforced"
on_violation = "alert"
enforce = true
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.0/8"]
  tools = ["/**"]
  data = ["all"]

[data.all]
read = ["/**"]
write = ["/**"]
"#;

fn tampers(d: &Daemon, session: &str) -> Vec<Value> {
    of(&d.events(), "tamper_attempt", session)
}

/// The call returned to an observed caller (`ok N`, or the error it got).
fn returned(out: &Output) -> bool {
    let s = String::from_utf8_lossy(&out.stdout);
    s.starts_with("ok ") || s.starts_with("err ")
}

/// Whether the command's process was killed (`vigil exec` reports a
/// signalled child as 128 + signal, or is killed with it).
fn killed(out: &Output) -> bool {
    out.status.signal() == Some(9) || out.status.code() == Some(128 + 9)
}

#[test]
fn every_reach_for_the_daemon_is_reported_and_is_an_enforced_callers_last() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(&agents());
    let pid = d.pid().expect("daemon pid").to_string();
    let policy = format!("/sys/fs/bpf/{}/POLICY", d.cgroup_parent);
    // SIGWINCH: ignored by the daemon, so the observed run leaves it unharmed.
    let attacks: [(&str, Vec<&str>, &str, &str); 5] = [
        ("signal", vec!["signal", &pid, "28"], "signal", "SIGWINCH"),
        (
            "ptrace",
            vec!["ptrace-seize", &pid],
            "ptrace",
            "PTRACE_SEIZE",
        ),
        ("vm", vec!["vm-read", &pid], "process_vm_readv", ""),
        ("pidfd", vec!["pidfd-open", &pid], "pidfd_open", ""),
        ("bpf", vec!["bpf-obj-get", &policy], "bpf", "BPF_OBJ_GET"),
    ];
    for (name, args, method, detail) in &attacks {
        let mut cmd = vec![wl()];
        cmd.extend(args.iter().map(|a| (*a).to_owned()));
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();

        // Observed: the door is open (the call returns, root may do it) and
        // the attempt is reported.
        let session = format!("s-{name}-observed");
        let out = d.exec("observed", &session, &cmd);
        assert!(
            returned(&out) && String::from_utf8_lossy(&out.stdout).starts_with("ok "),
            "{name}: as root the call succeeds unless stopped: {out:?}\n{}",
            d.log()
        );
        let t = d.wait_for("the observed attempt", |e| {
            e["kind"] == "tamper_attempt" && e["identity"]["session"] == session.as_str()
        });
        assert_eq!(t["method"], *method, "{t}");
        assert_eq!(t["detail"].as_str().unwrap_or(""), *detail, "{t}");
        assert_eq!(t["blocked"], false, "{t}");
        if *method == "bpf" {
            assert!(t.get("target_tid").is_none(), "{t}");
        } else {
            assert!(t["target_tid"].as_u64().is_some(), "{t}");
        }
        let a = d.anomaly(&session, "tamper_attempt");
        assert_eq!(a["action"], "observed", "{a}");
        assert_eq!(a["severity"], "critical", "{a}");

        // Enforced: killed on the way back from the call.
        let session = format!("s-{name}-enforced");
        let out = d.exec("enforced", &session, &cmd);
        assert!(
            killed(&out) && !returned(&out),
            "{name}: the enforced caller never sees the call return: {out:?}\n{}",
            d.log()
        );
        let t = d.wait_for("the enforced attempt", |e| {
            e["kind"] == "tamper_attempt" && e["identity"]["session"] == session.as_str()
        });
        assert_eq!(t["method"], *method, "{t}");
        assert_eq!(t["blocked"], true, "{t}");
        let a = d.anomaly(&session, "tamper_attempt");
        assert_eq!(a["action"], "killed", "{a}");
    }
    let mut d = d;
    assert!(d.alive(), "the daemon survived every attempt:\n{}", d.log());
    // Activity that reaches for no one is not an attempt.
    let out = d.exec(
        "enforced",
        "s-quiet",
        &[&wl(), "signal", &std::process::id().to_string(), "28"],
    );
    assert!(returned(&out), "{out:?}");
    d.settle();
    assert!(tampers(&d, "s-quiet").is_empty(), "{}", d.dump());
}

#[test]
fn writes_to_the_daemons_own_files_are_attempts_and_kill_an_enforced_writer() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(&agents());
    let state = d.dir.path().join("state");
    let config = d.config_path.to_str().unwrap().to_owned();
    let pid = d.pid().expect("daemon pid");
    let planted = state.join("planted");
    let planted = planted.to_str().unwrap();
    // Appending nothing opens for writing and changes no byte.
    for (i, (what, target)) in [
        ("the daemon's state directory", planted.to_owned()),
        ("the node config file", config.clone()),
        ("the daemon's process", format!("/proc/{pid}/comm")),
    ]
    .into_iter()
    .enumerate()
    {
        let session = format!("s-observed-{i}");
        let script = format!(": >> {target}; echo survived");
        let out = d.exec("observed", &session, &["/bin/sh", "-c", &script]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("survived"),
            "{out:?}\n{}",
            d.log()
        );
        let a = d.anomaly(&session, "tamper_attempt");
        let reason = a["reason"].as_str().unwrap();
        assert!(
            reason.contains(what) && reason.contains("write of"),
            "{reason}"
        );
        assert_eq!(a["action"], "observed", "{a}");
    }
    // The enforced writer is killed as soon as the daemon reads the open:
    // the write itself is not refused (no hook but LSM could).
    let script = format!(": >> {planted}; sleep 5; echo survived");
    let out = d.exec("enforced", "s-enforced-write", &["/bin/sh", "-c", &script]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("survived"),
        "{out:?}"
    );
    let a = d.anomaly("s-enforced-write", "tamper_attempt");
    assert_eq!(a["action"], "killed", "{a}");
    // Reading them is no attempt.
    let script = format!("cat {config} > /dev/null");
    let out = d.exec("enforced", "s-read", &["/bin/sh", "-c", &script]);
    assert!(out.status.success(), "{out:?}");
    d.settle();
    assert!(!d.has_anomaly("s-read", "tamper_attempt"), "{}", d.dump());
}
