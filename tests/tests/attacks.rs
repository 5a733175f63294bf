//! Attacks from inside an agent session on what Vigil already claims, each
//! against the real kernel with a real daemon: the test is the attack, and
//! it passes only when Vigil reports (or stops) it.

// Paths are written into TOML with `{:?}` (a quoted, escaped string).
#![allow(clippy::unnecessary_debug_formatting)]

use std::{path::Path, time::Duration};

use serde_json::Value;
use vigil_tests::{Daemon, Served, kernel_available, of, workload_bin};

fn wl() -> String {
    workload_bin().to_str().unwrap().to_owned()
}

/// A coding agent with a workspace, a credential it was not given, and a
/// short tool list (the workload, a shell, `true`).
fn config(root: &Path, window_seconds: u32) -> String {
    let r = root.display();
    format!(
        r#"
[scope]
aggregate_window_seconds = {window_seconds}

[[agent]]
name = "coder"
on_violation = "alert"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1", "[::1]"]
  tools = ["{wl}", "/bin/sh", "/usr/bin/sh", "/usr/bin/dash", "/bin/true", "/usr/bin/true", "/usr/bin/id", "/bin/cat", "/usr/bin/cat", "/bin/ln", "/usr/bin/ln", "/bin/mv", "/usr/bin/mv"]
  data = ["workspace"]

[[agent]]
name = "guarded"
on_violation = "alert"
enforce = true
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1"]
  tools = ["{wl}"]
  data = ["workspace"]

[[agent]]
name = "fileless"
on_violation = "alert"
enforce = true
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1"]
  tools = ["/**"]
  data = ["workspace"]
  exec_from_memory = true

[[agent]]
name = "scripted"
on_violation = "alert"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1"]
  tools = ["{wl}", "{r}/ws/bin/*"]
  data = ["workspace"]

[[agent]]
name = "pinned"
on_violation = "alert"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1"]
  tools = ["{wl}", "{r}/ws/tools/*"]
  data = ["workspace"]
  tools_by_hash = true

[[agent]]
name = "killer"
on_violation = "kill"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1"]
  tools = ["{wl}"]
  data = ["workspace"]

[data.workspace]
read = ["{r}/ws/**"]
write = ["{r}/ws/**"]

[data.hr]
read = ["{r}/hr/**"]

[identity.tok]
files = ["{r}/secrets/token"]
"#,
        wl = wl(),
    )
}

/// The workspace, the credential, and a hard link to the credential inside
/// the workspace that exists before the daemon starts (as one an agent made
/// in an earlier session would).
fn lay_out(root: &Path) {
    for dir in ["ws", "secrets", "hr"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("secrets/token"), "s3cr3t").unwrap();
    std::fs::write(root.join("ws/notes.txt"), "in scope").unwrap();
    std::fs::write(root.join("hr/pay.csv"), "alice,1").unwrap();
    std::fs::hard_link(root.join("secrets/token"), root.join("ws/old-link")).unwrap();
    // A tool of the `pinned` agent, pinned by content when the config loads.
    std::fs::create_dir_all(root.join("ws/tools")).unwrap();
    std::fs::copy("/usr/bin/true", root.join("ws/tools/check")).unwrap();
}

fn start(window_seconds: u32, daemon_extra: &str) -> Daemon {
    Daemon::start_fn(
        |root| {
            lay_out(root);
            config(root, window_seconds)
        },
        daemon_extra,
    )
}

fn anomalies(d: &Daemon, session: &str) -> Vec<Value> {
    of(&d.events(), "anomaly", session)
}

/// `openat(dirfd, "token")` on a descriptor of `secrets/`, then `dup2` of a
/// workspace descriptor onto the same number: a daemon that resolves the
/// descriptor after the fact sees `ws/token`, inside the workspace, and the
/// credential read goes unreported. The kernel resolves it at the open.
#[test]
fn a_reused_directory_descriptor_does_not_hide_a_credential_read() {
    if !kernel_available() {
        return;
    }
    let d = start(10, "");
    let root = d.dir.path();
    let secrets = root.join("secrets");
    let ws = root.join("ws");
    let out = d.exec(
        "coder",
        "s-dirfd",
        &[
            &wl(),
            "openat-swap",
            secrets.to_str().unwrap(),
            "token",
            ws.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    let token = secrets.join("token");
    let open = d.wait_for("the relative open of the token", |e| {
        e["kind"] == "file_open"
            && e["raw_path"] == "token"
            && e["identity"]["session"] == "s-dirfd"
    });
    assert_eq!(open["path"], token.to_str().unwrap(), "{}", d.dump());
    let a = d.anomaly("s-dirfd", "identity_outside_scope");
    assert_eq!(a["identity_name"], "tok");
}

/// The credential read through other names for the same file: a symlink,
/// a hard link the agent makes itself, one made before the daemon started,
/// and the process's own root through procfs. Each is the credential.
#[test]
fn a_credential_read_through_another_name_is_still_that_credential() {
    if !kernel_available() {
        return;
    }
    let d = start(10, "");
    // This kernel (6.18) has what typed reads need: the test is of them.
    assert!(
        d.log().contains("resolved paths are read by typed loads"),
        "{}",
        d.log()
    );
    credential_through_other_names(&d);
}

/// The same with the kernel objects read by helper calls, as on kernels
/// without typed reads.
#[test]
fn a_credential_read_through_another_name_is_that_credential_with_helper_reads() {
    if !kernel_available() {
        return;
    }
    let d = start(10, "typed_reads = false\n");
    assert!(
        d.log()
            .contains("typed reads unused: switched off (daemon.typed_reads = false)"),
        "{}",
        d.log()
    );
    credential_through_other_names(&d);
}

fn credential_through_other_names(d: &Daemon) {
    let root = d.dir.path().to_str().unwrap().to_owned();
    std::os::unix::fs::symlink(format!("{root}/secrets/token"), format!("{root}/ws/link")).unwrap();
    let attacks = [
        ("s-symlink", format!("cat {root}/ws/link")),
        (
            "s-hardlink",
            format!("ln {root}/secrets/token {root}/ws/hl && cat {root}/ws/hl"),
        ),
        ("s-oldlink", format!("cat {root}/ws/old-link")),
        (
            "s-procroot",
            format!("cat /proc/self/root{root}/secrets/token"),
        ),
        (
            "s-dotdot",
            format!("cd {root}/ws && cat ../ws/../secrets/token"),
        ),
    ];
    for (session, script) in &attacks {
        let out = d.exec("coder", session, &["/bin/sh", "-c", script]);
        assert!(
            out.status.success(),
            "{session}: {out:?}
{}",
            d.log()
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "s3cr3t", "{session}");
    }
    // The control: a workspace file, read the same way, is in scope.
    let out = d.exec(
        "coder",
        "s-control",
        &["/bin/sh", "-c", &format!("cat {root}/ws/notes.txt")],
    );
    assert!(out.status.success(), "{out:?}");
    for (session, _) in &attacks {
        let a = d.wait_for(&format!("the credential anomaly of {session}"), |e| {
            e["kind"] == "anomaly"
                && e["identity"]["session"] == *session
                && e["anomaly"] == "identity_outside_scope"
        });
        assert_eq!(a["identity_name"], "tok", "{session}: {a}");
    }
    let read = d.wait_for("the symlinked read", |e| {
        e["kind"] == "file_open"
            && e["identity"]["session"] == "s-symlink"
            && e["raw_path"]
                .as_str()
                .is_some_and(|r| r.ends_with("/ws/link"))
    });
    assert_eq!(read["path"], format!("{root}/secrets/token"), "{read}");
    assert!(read["inode"]["ino"].as_u64().unwrap() > 0, "{read}");
    d.settle();
    assert!(
        anomalies(d, "s-control").is_empty(),
        "a workspace read is in scope:\n{}",
        d.dump()
    );
}

/// `execveat(fd, "", AT_EMPTY_PATH)` names the program `/dev/fd/N`, which
/// in the daemon's own process is one of the daemon's files. The program
/// is what `mm->exe_file` says, read in the kernel.
#[test]
fn a_program_run_from_a_descriptor_is_the_file_the_kernel_runs() {
    if !kernel_available() {
        return;
    }
    let d = start(10, "");
    let own_dir = d.dir.path().to_str().unwrap().to_owned();

    // A real, allowed tool run through a descriptor: named, and in scope.
    let out = d.exec(
        "coder",
        "s-fdexec",
        &[&wl(), "exec-fd", "/usr/bin/id", "-u"],
    );
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    let e = d.wait_for("the exec through a descriptor", |e| {
        e["kind"] == "exec"
            && e["identity"]["session"] == "s-fdexec"
            && e["filename"]
                .as_str()
                .is_some_and(|f| f.starts_with("/dev/fd/"))
    });
    let exe = e["process"]["exe"].as_str().unwrap_or_default();
    assert!(
        std::fs::canonicalize("/usr/bin/id").unwrap().to_str() == Some(exe),
        "exe {exe:?}: {e}"
    );
    // And its identity, as stat(2) gives it: the same file under any name.
    let id = std::fs::metadata("/usr/bin/id").unwrap();
    assert_eq!(
        (e["inode"]["dev"].as_u64(), e["inode"]["ino"].as_u64()),
        (
            Some(std::os::unix::fs::MetadataExt::dev(&id)),
            Some(std::os::unix::fs::MetadataExt::ino(&id))
        ),
        "{e}"
    );
    // The same program from an anonymous in-memory copy: named as such
    // (never as a file of the daemon), and flagged as run from memory.
    let out = d.exec(
        "coder",
        "s-memfd",
        &[&wl(), "exec-memfd", "/usr/bin/id", "-u"],
    );
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    let e = d.wait_for("the exec of a memfd", |e| {
        e["kind"] == "exec"
            && e["identity"]["session"] == "s-memfd"
            && e["filename"]
                .as_str()
                .is_some_and(|f| f.starts_with("/dev/fd/"))
    });
    assert_eq!(e["process"]["exe"], "/memfd:vigil-payload (deleted)", "{e}");
    assert_eq!(e["from_memory"], true, "{e}");
    let a = d.anomaly("s-memfd", "exec_from_memory");
    let reason = a["reason"].as_str().unwrap();
    assert!(
        reason.contains("/memfd:vigil-payload (deleted)"),
        "{reason}"
    );
    assert_eq!(a["severity"], "critical", "{a}");
    d.settle();
    for e in of(&d.events(), "exec", "s-fdexec")
        .into_iter()
        .chain(anomalies(&d, "s-fdexec"))
        .chain(of(&d.events(), "exec", "s-memfd"))
        .chain(anomalies(&d, "s-memfd"))
    {
        assert!(
            !e.to_string().contains(&own_dir),
            "an event names the daemon's own files: {e}"
        );
    }
    assert!(
        !d.has_anomaly("s-fdexec", "unapproved_tool"),
        "/usr/bin/id is an allowed tool, whatever name ran it:\n{}",
        d.dump()
    );
}

/// A symbolic link planted under a name `tools` allow leads to another
/// program: that program is what runs, and what is judged.
#[test]
fn a_link_under_an_allowed_name_runs_the_program_it_leads_to() {
    if !kernel_available() {
        return;
    }
    let d = start(10, "");
    let bin = d.dir.path().join("ws/bin");
    std::fs::create_dir_all(&bin).unwrap();
    // The control: a script of its own under the allowed name is allowed.
    let script = bin.join("helper.sh");
    std::fs::write(&script, "#!/bin/sh\necho helped\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = d.exec("scripted", "s-script", &[script.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "helped",
        "{out:?}"
    );
    // The attack: `id` under an allowed name.
    let planted = bin.join("helper");
    std::os::unix::fs::symlink("/usr/bin/id", &planted).unwrap();
    let out = d.exec("scripted", "s-planted", &[planted.to_str().unwrap(), "-u"]);
    assert!(out.status.success(), "{out:?}");
    let a = d.anomaly("s-planted", "unapproved_tool");
    let id = std::fs::canonicalize("/usr/bin/id").unwrap();
    assert!(
        a["reason"].as_str().unwrap().contains(id.to_str().unwrap()),
        "{a}"
    );
    d.settle();
    assert!(
        !d.has_anomaly("s-script", "unapproved_tool"),
        "{}",
        d.dump()
    );
}

/// With `tools_by_hash`, a program copied or moved under an allowed name is
/// still the program it is; without it, the name is enough.
#[test]
fn a_binary_copied_under_an_allowed_name_is_not_that_tool_when_pinned() {
    if !kernel_available() {
        return;
    }
    let d = start(10, "");
    let ws = d.dir.path().join("ws");
    let pinned_tool = ws.join("tools/check");
    let out = d.exec("pinned", "s-genuine", &[pinned_tool.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    // The daemon reads a program's content when it handles the exec: let
    // it, before the file changes under the same name.
    d.settle();
    // The attack, twice: `id` copied over the pinned tool, and moved in
    // under a new allowed name.
    std::fs::copy("/usr/bin/id", &pinned_tool).unwrap();
    let out = d.exec("pinned", "s-copied", &[pinned_tool.to_str().unwrap(), "-u"]);
    assert!(out.status.success(), "{out:?}");
    let a = d.anomaly("s-copied", "unapproved_tool");
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .contains("is not that of any pinned tool"),
        "{a}"
    );
    let moved = ws.join("tools/helper");
    std::fs::copy("/usr/bin/id", ws.join("id-copy")).unwrap();
    std::fs::rename(ws.join("id-copy"), &moved).unwrap();
    let out = d.exec("pinned", "s-moved", &[moved.to_str().unwrap(), "-u"]);
    assert!(out.status.success(), "{out:?}");
    d.anomaly("s-moved", "unapproved_tool");
    // Without pinning the same copy passes by its name.
    let bin = ws.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/usr/bin/id", bin.join("helper")).unwrap();
    let out = d.exec(
        "scripted",
        "s-unpinned",
        &[bin.join("helper").to_str().unwrap(), "-u"],
    );
    assert!(out.status.success(), "{out:?}");
    d.settle();
    for session in ["s-genuine", "s-unpinned"] {
        assert!(
            !d.has_anomaly(session, "unapproved_tool"),
            "{session}:\n{}",
            d.dump()
        );
    }
}

/// A program with no name on any file system cannot be pinned by `tools`
/// or looked at after: for an enforced agent the kernel kills it before its
/// first instruction, whatever `tools` say, unless its scope allows it.
#[test]
fn a_program_run_from_memory_never_runs_for_an_enforced_agent() {
    if !kernel_available() {
        return;
    }
    let d = start(10, "");
    // Allowed explicitly: it runs, and is no anomaly.
    let out = d.exec(
        "fileless",
        "s-allowed",
        &[&wl(), "exec-memfd", "/usr/bin/id", "-u"],
    );
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{out:?}");
    // Not allowed: killed before it printed anything.
    let out = d.exec(
        "guarded",
        "s-fileless",
        &[&wl(), "exec-memfd", "/usr/bin/id", "-u"],
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "the program never ran: {out:?}");
    let e = d.wait_for("the killed exec", |e| {
        e["kind"] == "exec" && e["identity"]["session"] == "s-fileless" && e["from_memory"] == true
    });
    assert_eq!(e["blocked"], true, "{e}");
    let a = d.anomaly("s-fileless", "exec_from_memory");
    assert_eq!(a["action"], "killed", "{a}");
    // A deleted file run through its descriptor is the same: a copy of a
    // tool, unlinked once open.
    let copy = d.dir.path().join("ws/copy-of-id");
    std::fs::copy("/usr/bin/id", &copy).unwrap();
    let script = format!(
        "exec 3<{c} && rm {c} && exec {wl} exec-fd /dev/fd/3 -u",
        c = copy.display(),
        wl = wl()
    );
    let out = d.exec("guarded", "s-deleted", &["/bin/sh", "-c", &script]);
    assert!(
        out.stdout.is_empty(),
        "the deleted program never ran: {out:?}"
    );
    let a = d.anomaly("s-deleted", "exec_from_memory");
    assert_eq!(a["action"], "killed", "{a}");
    d.settle();
    assert!(
        !d.has_anomaly("s-allowed", "exec_from_memory"),
        "{}",
        d.dump()
    );
}

/// Repeats of one anomaly are folded until their window closes; stopping
/// the daemon inside the window must still report them.
#[test]
fn folded_anomalies_are_reported_when_the_daemon_stops_inside_their_window() {
    if !kernel_available() {
        return;
    }
    let mut d = start(600, "");
    let out = d.exec(
        "coder",
        "s-fold",
        &["/bin/sh", "-c", "/bin/echo x; /bin/echo x; /bin/echo x"],
    );
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    d.anomaly("s-fold", "unapproved_tool");
    d.settle();
    d.stop();
    let reported: Vec<Value> = anomalies(&d, "s-fold")
        .into_iter()
        .filter(|a| a["anomaly"] == "unapproved_tool")
        .collect();
    let count: u64 = reported.iter().map(|a| a["count"].as_u64().unwrap()).sum();
    assert_eq!(
        count,
        3,
        "three unapproved execs, as {} reports:\n{}\n{}",
        reported.len(),
        d.dump(),
        d.log()
    );
}

/// A session that floods the ring buffer makes the kernel drop records,
/// its own among them: the loss is reported as that session's, so hiding
/// an action in a flood names the flooder. The daemon is stopped
/// (`SIGSTOP`) meanwhile, so the ring cannot drain and the loss is certain.
#[test]
fn records_lost_in_a_flood_are_attributed_to_the_session_that_lost_them() {
    if !kernel_available() {
        return;
    }
    // Room for about two thousand open records: sessions starting normally
    // lose nothing, a flood of ten thousand with the reader stopped must.
    let d = start(10, "ring_buffer_bytes = 1048576\nopen_repeat_ms = 0");
    let mut quiet = Served::start(&d, "coder", "s-quiet");
    let mut flood = Served::start(&d, "coder", "s-flood");
    assert_eq!(quiet.ask("open /etc/hostname").as_deref(), Some("ok"));
    d.settle();
    let pid = nix::unistd::Pid::from_raw(d.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let prefix = d.dir.path().join("ws/missing-");
    let answer = flood.ask(&format!("open-many {} 10000", prefix.display()));
    let token = d.dir.path().join("secrets/token");
    let hidden = flood.ask(&format!("open {}", token.display()));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(answer.as_deref(), Some("ok 0"));
    assert_eq!(hidden.as_deref(), Some("ok"));

    let attributed = d.wait_for("the flooding session's loss", |e| {
        e["kind"] == "loss" && e["identity"]["session"] == "s-flood"
    });
    assert_eq!(attributed["identity"]["agent"], "coder");
    assert_eq!(attributed["sensor"], "file");
    d.wait_for("the node's loss", |e| {
        e["kind"] == "loss" && e["identity"]["session"].is_null()
    });
    std::thread::sleep(Duration::from_millis(1500));
    let events = d.events();
    let losses: Vec<&Value> = events.iter().filter(|e| e["kind"] == "loss").collect();
    let sum = |session: Option<&str>| -> u64 {
        losses
            .iter()
            .filter(|e| e["identity"]["session"].as_str() == session)
            .map(|e| e["lost"].as_u64().unwrap())
            .sum()
    };
    let node = sum(None);
    let attributed: u64 = losses
        .iter()
        .filter(|e| e["identity"]["session"].is_string())
        .map(|e| e["lost"].as_u64().unwrap())
        .sum();
    assert_eq!(
        attributed, node,
        "every lost record is named by its session: {losses:?}"
    );
    // The ring holds a few thousand records: most of the flood is lost.
    assert!(sum(Some("s-flood")) > 5000, "{losses:?}");
    assert_eq!(sum(Some("s-quiet")), 0, "{losses:?}");
}

/// io_uring opens and reads without the syscalls the file sensor hooks:
/// the credential read through it is still seen (from io_uring's own
/// tracepoints), judged like any open, and the ring itself is reported.
#[test]
fn a_credential_read_through_io_uring_is_seen_and_judged() {
    if !kernel_available() {
        return;
    }
    let d = start(10, "");
    let token = d.dir.path().join("secrets/token");
    let token = token.to_str().unwrap();
    let out = d.exec("coder", "s-uring", &[&wl(), "uring-read", token]);
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "s3cr3t");
    let setup = d.wait_for("the ring", |e| {
        e["kind"] == "io_uring" && e["identity"]["session"] == "s-uring" && e["op"] == "setup"
    });
    assert_eq!(setup["blocked"], false);
    let open = d.wait_for("the open through the ring", |e| {
        e["kind"] == "file_open" && e["identity"]["session"] == "s-uring" && e["path"] == token
    });
    assert_eq!(open["syscall"], "io_uring", "{open}");
    for kind in ["io_uring_used", "identity_outside_scope"] {
        d.wait_for(kind, |e| {
            e["kind"] == "anomaly" && e["identity"]["session"] == "s-uring" && e["anomaly"] == kind
        });
    }
    d.settle();
    // The control: no open syscall read the credential, so only the
    // io_uring sensor could have seen it.
    assert!(
        !of(&d.events(), "file_open", "s-uring")
            .iter()
            .any(|e| e["path"] == token && e["syscall"] != "io_uring"),
        "{}",
        d.dump()
    );
}

/// An agent whose systems are enforced may not use io_uring at all: the
/// process is killed as `io_uring_setup` returns, before its first request.
#[test]
fn io_uring_is_denied_in_the_kernel_for_an_enforced_agent() {
    if !kernel_available() {
        return;
    }
    let d = start(10, "");
    let token = d.dir.path().join("secrets/token");
    let out = d.exec(
        "guarded",
        "s-denied",
        &[&wl(), "uring-read", token.to_str().unwrap()],
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "nothing was read: {out:?}");
    let setup = d.wait_for("the refused ring", |e| {
        e["kind"] == "io_uring" && e["identity"]["session"] == "s-denied"
    });
    assert_eq!(setup["blocked"], true, "{setup}");
    let a = d.anomaly("s-denied", "io_uring_used");
    assert_eq!(a["action"], "killed", "{a}");
    d.settle();
    assert!(
        !of(&d.events(), "file_open", "s-denied")
            .iter()
            .any(|e| e["syscall"] == "io_uring"),
        "no request was submitted:\n{}",
        d.dump()
    );
}

/// The dynamic loader run directly runs whatever program it is given: an
/// allowed tool stays allowed, a program outside the tools is named.
#[test]
fn a_program_run_through_the_dynamic_loader_is_judged_as_that_program() {
    if !kernel_available() {
        return;
    }
    let loader = [
        "/lib64/ld-linux-x86-64.so.2",
        "/lib/ld-linux-aarch64.so.1",
        "/lib/ld-linux-x86-64.so.2",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("a glibc dynamic loader");
    let d = start(10, "");
    let payload = d.dir.path().join("ws/payload");
    std::fs::copy("/usr/bin/id", &payload).unwrap();
    let out = d.exec("coder", "s-ld-ok", &[loader, "/usr/bin/id", "-u"]);
    assert!(out.status.success(), "{out:?}");
    let out = d.exec(
        "coder",
        "s-ld-payload",
        &[loader, "--argv0", "id", payload.to_str().unwrap(), "-u"],
    );
    assert!(out.status.success(), "{out:?}");
    let a = d.anomaly("s-ld-payload", "unapproved_tool");
    let reason = a["reason"].as_str().unwrap();
    assert!(reason.contains(payload.to_str().unwrap()), "{reason}");
    d.settle();
    assert!(
        !d.has_anomaly("s-ld-ok", "unapproved_tool"),
        "/usr/bin/id is allowed however it is started:\n{}",
        d.dump()
    );
}

/// The reads above begin with a new name for the credential, which the
/// owner of a file may always make: `ln`, `ln -s` and `mv` of the token (and
/// a hard link to a link of it made before the daemon started, known by its
/// inode) each succeed, and each is reported as what it is, a
/// `link_to_protected` anomaly, before anything opens the new name. Links
/// and renames inside the workspace are not. A revoked session's link is
/// killed in the kernel as it returns, and an agent with
/// `on_violation = "kill"` dies for it.
#[test]
fn a_new_name_for_a_credential_is_reported_when_it_is_made() {
    if !kernel_available() {
        return;
    }
    let d = start(10, "");
    let root = d.dir.path().to_str().unwrap().to_owned();
    let token = format!("{root}/secrets/token");
    let attacks = [
        (
            "s-ln",
            format!("cd {root} && ln secrets/token ws/hl"),
            "hardlink",
        ),
        (
            "s-lns",
            format!("cd {root}/ws && ln -s ../secrets/token link"),
            "symlink",
        ),
        (
            "s-mv",
            format!("cd {root} && mv secrets/token ws/moved && mv ws/moved secrets/token"),
            "rename",
        ),
        (
            "s-inode",
            format!("ln {root}/ws/old-link {root}/ws/hl2"),
            "hardlink",
        ),
    ];
    for (session, script, _) in &attacks {
        let out = d.exec("coder", session, &["/bin/sh", "-c", script]);
        assert!(out.status.success(), "{session}: {out:?}\n{}", d.log());
    }
    // The attack worked: the workspace names reach the credential.
    for name in ["hl", "link", "hl2"] {
        assert_eq!(
            std::fs::read_to_string(format!("{root}/ws/{name}")).unwrap(),
            "s3cr3t",
            "{name}"
        );
    }
    // Data of a class the agent was not given, linked into its workspace.
    let out = d.exec(
        "coder",
        "s-data",
        &[
            "/bin/sh",
            "-c",
            &format!("cd {root}/ws && ln -s ../hr/pay.csv pay"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let a = d.anomaly("s-data", "link_to_protected");
    assert_eq!(a["severity"], "high", "{a}");
    assert_eq!(
        a["reason"],
        format!(
            "symbolic link {root}/ws/pay to {root}/hr/pay.csv names data class hr, outside data of coder"
        ),
        "{a}"
    );
    // The control: the same calls on a workspace file.
    let control = format!("cd {root}/ws && ln notes.txt n2 && ln -s notes.txt n3 && mv n2 n4");
    let out = d.exec("coder", "s-control", &["/bin/sh", "-c", &control]);
    assert!(out.status.success(), "{out:?}");
    for (session, _, op) in &attacks {
        let a = d.wait_for(&format!("the link anomaly of {session}"), |e| {
            e["kind"] == "anomaly"
                && e["identity"]["session"] == *session
                && e["anomaly"] == "link_to_protected"
        });
        assert_eq!(a["identity_name"], "tok", "{session}: {a}");
        assert_eq!(a["severity"], "critical", "{session}: {a}");
        assert_eq!(a["offending"]["kind"], "file_link", "{session}: {a}");
        assert_eq!(a["offending"]["op"], *op, "{session}: {a}");
    }
    let ln = d.wait_for("the hard link", |e| {
        e["kind"] == "file_link" && e["identity"]["session"] == "s-ln"
    });
    assert_eq!(ln["syscall"], "linkat", "{ln}");
    assert_eq!(ln["target"], token.as_str(), "{ln}");
    assert_eq!(ln["raw_target"], "secrets/token", "{ln}");
    assert_eq!(ln["path"], format!("{root}/ws/hl"), "{ln}");
    let sym = d.wait_for("the symbolic link", |e| {
        e["kind"] == "file_link" && e["identity"]["session"] == "s-lns"
    });
    assert_eq!(sym["target"], token.as_str(), "{sym}");
    assert_eq!(sym["raw_target"], "../secrets/token", "{sym}");
    // Known by its inode: the name linked is a workspace name.
    let by_inode = d.wait_for("the link anomaly of s-inode", |e| {
        e["kind"] == "anomaly" && e["identity"]["session"] == "s-inode"
    });
    assert_eq!(
        by_inode["offending"]["target"],
        format!("{root}/ws/old-link"),
        "{by_inode}"
    );

    // Revoked: killed in the kernel as the call returns (the link exists).
    let mut s = Served::start(&d, "coder", "s-revoked");
    d.vigil_ok(&[
        "revoke",
        "coder",
        "--session",
        "s-revoked",
        "--reason",
        "test",
    ]);
    let _ = s.ask(&format!("hardlink {token} {root}/ws/by-revoked"));
    assert_eq!(s.wait_signal(), Some(9));
    let blocked = d.wait_for("the revoked link", |e| {
        e["kind"] == "file_link" && e["identity"]["session"] == "s-revoked"
    });
    assert_eq!(blocked["blocked"], true, "{blocked}");

    // on_violation = "kill": the daemon kills the process that made it.
    let mut k = Served::start(&d, "killer", "s-kill");
    let _ = k.ask(&format!("symlink {token} {root}/ws/by-killer"));
    let a = d.anomaly("s-kill", "link_to_protected");
    assert_eq!(a["action"], "killed", "{a}");
    assert_eq!(k.wait_signal(), Some(9));

    d.settle();
    let links = of(&d.events(), "file_link", "s-control");
    assert_eq!(links.len(), 3, "{links:#?}");
    assert!(
        anomalies(&d, "s-control").is_empty(),
        "workspace links are in scope:\n{}",
        d.dump()
    );
}
