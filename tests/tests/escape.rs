//! A watched process leaving its session: the sensors watch the session's
//! cgroup subtree, so a process that writes its pid (or another watched
//! process's) into some other cgroup's `cgroup.procs` would leave their
//! sight. Each test is the attack, against the real kernel and daemon.

use std::path::PathBuf;

use serde_json::Value;
use vigil_tests::{Daemon, kernel_available, workload_bin};

fn wl() -> String {
    workload_bin().to_str().unwrap().to_owned()
}

fn config() -> String {
    let wl = wl();
    format!(
        r#"
[[agent]]
name = "coder"
on_violation = "alert"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1"]
  tools = ["{wl}", "/bin/true", "/usr/bin/true", "/bin/sleep", "/usr/bin/sleep"]

[[agent]]
name = "guarded"
on_violation = "alert"
enforce = true
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1"]
  tools = ["{wl}", "/bin/sleep", "/usr/bin/sleep"]
"#
    )
}

/// A cgroup outside the session parent, removed (with anything left in it)
/// at the end.
struct Outside(PathBuf);

impl Outside {
    fn new(name: &str) -> Self {
        let mount = vigil_harness::cgroup::v2_mount().expect("cgroup v2 mount");
        let dir = mount.join(format!("vigil-escape-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn procs(&self) -> String {
        std::fs::read_to_string(self.0.join("cgroup.procs")).unwrap()
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = vigil_harness::cgroup::kill(&self.0);
        let _ = vigil_harness::cgroup::remove(&self.0);
    }
}

fn escape_anomaly(d: &Daemon, session: &str) -> Value {
    d.wait_for(&format!("the session_escape anomaly of {session}"), |e| {
        e["kind"] == "anomaly"
            && e["identity"]["session"] == session
            && e["anomaly"] == "session_escape"
    })
}

/// A process that moves itself out of its session is reported, and what it
/// does afterwards is still seen as the session's.
#[test]
fn a_process_moving_itself_out_of_its_session_is_reported_and_still_watched() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start_fn(|_| config(), "");
    let out_there = Outside::new("self");
    // The control: the move itself works.
    let mut sleeper = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .unwrap();
    std::fs::write(out_there.0.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    assert!(out_there.procs().contains(&sleeper.id().to_string()));
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();

    let marker = "escaped-and-still-seen";
    let out = d.exec(
        "coder",
        "s-escape",
        &[&wl(), "escape", out_there.path(), "/bin/true", marker],
    );
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "escaped");
    let e = d.wait_for("the escape", |e| {
        e["kind"] == "session_escape" && e["identity"]["session"] == "s-escape"
    });
    assert_eq!(e["self_move"], true, "{e}");
    assert_eq!(e["blocked"], false, "{e}");
    assert_eq!(
        e["to_cgroup_id"],
        e["to_cgroup_id"].as_u64().unwrap(),
        "{e}"
    );
    let a = escape_anomaly(&d, "s-escape");
    assert_eq!(a["action"], "observed", "{a}");
    // Outside the session's cgroups, the exec it ran there is still the session's.
    let exec = d.wait_for("the exec after the escape", |e| {
        e["kind"] == "exec"
            && e["argv"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == marker))
    });
    assert_eq!(exec["identity"]["session"], "s-escape", "{exec}");
    assert_eq!(exec["identity"]["agent"], "coder", "{exec}");
}

/// For an enforced agent the escape is killed: a process moving itself dies
/// before its write returns; one that moves another is killed in the
/// kernel, and the moved process by the daemon.
#[test]
fn an_escape_is_killed_for_an_enforced_agent() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start_fn(|_| config(), "");
    let out_there = Outside::new("enforced");
    let out = d.exec(
        "guarded",
        "s-escape-self",
        &[&wl(), "escape", out_there.path()],
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9),
        "{out:?}\n{}",
        d.log()
    );
    assert!(out.stdout.is_empty(), "killed before it went on: {out:?}");
    let e = d.wait_for("the escape", |e| {
        e["kind"] == "session_escape" && e["identity"]["session"] == "s-escape-self"
    });
    assert_eq!(e["blocked"], true, "{e}");
    assert_eq!(escape_anomaly(&d, "s-escape-self")["action"], "killed");

    let out = d.exec(
        "guarded",
        "s-escape-other",
        &[&wl(), "escape-other", out_there.path(), "30"],
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9),
        "the writer is killed: {out:?}"
    );
    let e = d.wait_for("the escape of the other process", |e| {
        e["kind"] == "session_escape" && e["identity"]["session"] == "s-escape-other"
    });
    assert_eq!(
        (&e["self_move"], &e["blocked"]),
        (&false.into(), &true.into()),
        "{e}"
    );
    assert_eq!(escape_anomaly(&d, "s-escape-other")["action"], "killed");
    let moved = e["moved_pid"].as_u64().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while out_there.procs().contains(&moved.to_string()) {
        assert!(
            std::time::Instant::now() < deadline,
            "pid {moved} still alive"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `clone3` with `CLONE_INTO_CGROUP` creates a process straight in another
/// cgroup: nothing is moved, so no move hook fires. The fork is where it
/// is seen, reported as an escape and, for an enforced agent, killed.
#[test]
fn a_process_created_outside_its_session_is_an_escape() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start_fn(|_| config(), "");
    let out_there = Outside::new("clone");
    // The control: outside Vigil the child runs in that cgroup.
    let out = std::process::Command::new(wl())
        .args(["clone-into", out_there.path(), "0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.contains("exit 0"), "{out:?}");

    let out = d.exec(
        "coder",
        "s-clone",
        &[&wl(), "clone-into", out_there.path(), "0"],
    );
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    let e = d.wait_for("the escape", |e| {
        e["kind"] == "session_escape" && e["identity"]["session"] == "s-clone"
    });
    assert_eq!(
        (&e["created_there"], &e["self_move"]),
        (&true.into(), &false.into()),
        "{e}"
    );
    assert_eq!(escape_anomaly(&d, "s-clone")["action"], "observed");

    let out = d.exec(
        "guarded",
        "s-clone-killed",
        &[&wl(), "clone-into", out_there.path(), "30"],
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9),
        "the parent is killed: {out:?}"
    );
    let e = d.wait_for("the escape", |e| {
        e["kind"] == "session_escape" && e["identity"]["session"] == "s-clone-killed"
    });
    assert_eq!(e["blocked"], true, "{e}");
    let created = e["moved_pid"].as_u64().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while out_there.procs().lines().any(|l| l == created) {
        assert!(
            std::time::Instant::now() < deadline,
            "pid {created} still alive"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
