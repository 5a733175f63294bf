//! Tampering with the daemon's pins and links from another root process,
//! with a real daemon, a revoked session and the real kernel.

#![allow(clippy::unnecessary_debug_formatting)]

use std::{
    net::TcpListener,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use vigil::api::pb;
use vigil_tests::{Daemon, Served, kernel_available, workload_bin};

const EPERM: &str = "err 1";

fn agents() -> String {
    let wl = workload_bin();
    r#"
[scope]
aggregate_window_seconds = 1

[[agent]]
name = "coder"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.0/8"]
  tools = ["/**"]

[[agent]]
name = "other"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.0/8"]
  tools = ["/**"]
"#
    .replace("WORKLOAD", wl.to_str().unwrap())
}

fn pin_dir(d: &Daemon) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/{}", d.cgroup_parent))
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_owned());
            }
        }
    }
    out.sort();
    out
}

/// The pin of `program`'s link.
fn link_pin(d: &Daemon, program: &str) -> PathBuf {
    let dir = pin_dir(d);
    files(&dir)
        .into_iter()
        .find(|p| {
            p.starts_with("links")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{program}-")))
        })
        .map_or_else(
            || panic!("no pin of {program} under {}", dir.display()),
            |p| dir.join(p),
        )
}

/// What another root process can do with a pin: open the link and detach
/// it (`BPF_OBJ_GET`, then `BPF_LINK_DETACH`).
fn detach(pin: &Path) {
    #[repr(C)]
    struct Obj {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    #[repr(C)]
    struct Detach {
        link_fd: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let name = std::ffi::CString::new(pin.as_os_str().as_bytes()).unwrap();
    let mut obj = Obj {
        pathname: name.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: a valid bpf_attr prefix for BPF_OBJ_GET, of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            std::ptr::from_mut(&mut obj),
            std::mem::size_of::<Obj>(),
        )
    };
    assert!(
        fd >= 0,
        "BPF_OBJ_GET {}: {}",
        pin.display(),
        std::io::Error::last_os_error()
    );
    // SAFETY: BPF_OBJ_GET returned a new fd.
    let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).unwrap()) };
    let mut attr = Detach {
        link_fd: u32::try_from(fd.as_raw_fd()).unwrap(),
    };
    // SAFETY: a valid bpf_attr prefix for BPF_LINK_DETACH.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            std::ptr::from_mut(&mut attr),
            std::mem::size_of::<Detach>(),
        )
    };
    assert_eq!(
        r,
        0,
        "BPF_LINK_DETACH {}: {}",
        pin.display(),
        std::io::Error::last_os_error()
    );
}

fn program<'a>(s: &'a pb::StatusResponse, name: &str) -> &'a pb::ProgramStatus {
    s.sensors
        .iter()
        .flat_map(|x| &x.programs)
        .find(|p| p.program == name)
        .unwrap_or_else(|| panic!("no program {name} in status: {s:?}"))
}

fn sensor<'a>(s: &'a pb::StatusResponse, name: &str) -> &'a pb::SensorStatus {
    s.sensors.iter().find(|x| x.name == name).unwrap()
}

#[test]
fn removing_every_pin_neither_blinds_nor_disarms_the_running_daemon() {
    if !kernel_available() {
        return;
    }
    let mut d = Daemon::start(&agents());
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let mut s = Served::start(&d, "coder", "s-pins");
    let mut other = Served::start(&d, "other", "s-other");
    d.vigil_ok(&["revoke", "coder", "--session", "s-pins", "--reason", "pins"]);
    assert_eq!(s.ask(&format!("connect {addr}")).as_deref(), Some(EPERM));
    let dir = pin_dir(&d);
    let before = files(&dir);
    assert!(
        before.iter().any(|p| p.starts_with("links")),
        "links pinned: {before:?}"
    );

    // The attack: a root process removes everything the daemon pinned.
    let rm = std::process::Command::new("rm")
        .arg("-rf")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(rm.success());
    // An unlinked pin lets go of its object after an RCU grace period and a
    // workqueue run: give a link that only the pin held time to detach.
    std::thread::sleep(Duration::from_millis(300));

    // Nothing detached: the revoked session is still refused and killed,
    // and the other agent's activity is still reported.
    assert_eq!(
        s.ask(&format!("connect {addr}")).as_deref(),
        Some(EPERM),
        "connect4 detached with its pin\n{}",
        d.log()
    );
    assert_eq!(s.ask("exec /bin/true").as_deref(), Some("signal 9"));
    assert_eq!(other.ask("exec /bin/true").as_deref(), Some("exit 0"));
    assert_eq!(other.ask("open /etc/hostname").as_deref(), Some("ok"));
    d.wait_for("the other agent's exec", |e| {
        e["kind"] == "exec" && e["identity"]["session"] == "s-other" && e["filename"] == "/bin/true"
    });
    d.wait_for("the other agent's open", |e| {
        e["kind"] == "file_open"
            && e["identity"]["session"] == "s-other"
            && e["path"] == "/etc/hostname"
    });
    d.wait_for("the revoked session's blocked exec", |e| {
        e["kind"] == "exec" && e["identity"]["session"] == "s-pins" && e["blocked"] == true
    });

    // Reported, and every pin is back.
    let t = d.wait_for("tamper event", |e| {
        e["kind"] == "sensor_tampered" && e["tamper"] == "pin_removed"
    });
    assert_eq!(t["repaired"], true, "{t}");
    assert_eq!(t["action"], "re-pinned", "{t}");
    d.wait_for("a map pin put back", |e| {
        e["kind"] == "sensor_tampered" && e["sensor"] == "maps" && e["object"] == "POLICY"
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while files(&dir) != before {
        assert!(
            Instant::now() < deadline,
            "pins not back: {:?} vs {before:?}",
            files(&dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = d.api().status().unwrap();
    assert!(status.sensor_tampers >= before.len() as u64, "{status:?}");
    assert!(status.sensors.iter().all(|x| x.attached), "{status:?}");
    let text = d.vigil_ok(&["status"]);
    assert!(text.contains("tamper"), "{text}");

    // The pins put back still outlive the daemon.
    d.kill9();
    assert_eq!(
        s.ask(&format!("connect {addr}")).as_deref(),
        Some(EPERM),
        "the re-pinned links hold with no daemon"
    );
}

#[test]
fn a_detached_link_shows_in_status_and_is_attached_again() {
    if !kernel_available() {
        return;
    }
    // A long interval between checks, so the detached state can be seen.
    let d = Daemon::start_with(&agents(), "guard_interval_ms = 1500");
    let api = d.api();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let mut s = Served::start(&d, "coder", "s-det");
    d.vigil_ok(&[
        "revoke",
        "coder",
        "--session",
        "s-det",
        "--reason",
        "detach",
    ]);
    assert_eq!(s.ask(&format!("connect {addr}")).as_deref(), Some(EPERM));
    let before = api.status().unwrap();
    assert!(program(&before, "vigil_connect4").attached, "{before:?}");
    let first_link = program(&before, "vigil_connect4").link_id;

    let reattached = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let st = api.status().unwrap();
            if program(&st, "vigil_connect4").reattached == n {
                return st;
            }
            assert!(Instant::now() < deadline, "not re-attached: {st:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // The first detach finds when the daemon checks: it re-attaches at a check.
    detach(&link_pin(&d, "vigil_connect4"));
    let st = reattached(1);
    assert!(program(&st, "vigil_connect4").attached, "{st:?}");
    assert_ne!(program(&st, "vigil_connect4").link_id, first_link);

    // So the next check is about 1.5 s away: the detached state is visible.
    let blocked_before = d
        .events()
        .iter()
        .filter(|e| e["kind"] == "connect" && e["blocked"] == true)
        .count();
    let detached_at = Instant::now();
    detach(&link_pin(&d, "vigil_connect4"));
    let st = api.status().unwrap();
    assert!(!program(&st, "vigil_connect4").attached, "{st:?}");
    assert!(!sensor(&st, "network").attached, "{st:?}");
    assert!(
        sensor(&st, "network").error.contains("vigil_connect4"),
        "{st:?}"
    );
    let text = d.vigil_ok(&["status"]);
    assert!(text.contains("DETACHED"), "{text}");
    // The detach was real: the revoked session connects while it lasts.
    assert_eq!(s.ask(&format!("connect {addr}")).as_deref(), Some("ok"));

    let st = reattached(2);
    let took = detached_at.elapsed();
    eprintln!("connect4 re-attached {took:?} after its detach (checks every 1.5 s)");
    assert!(sensor(&st, "network").attached, "{st:?}");
    assert_eq!(s.ask(&format!("connect {addr}")).as_deref(), Some(EPERM));
    let deadline = Instant::now() + Duration::from_secs(5);
    while d
        .events()
        .iter()
        .filter(|e| e["kind"] == "connect" && e["blocked"] == true)
        .count()
        <= blocked_before
    {
        assert!(
            Instant::now() < deadline,
            "no blocked connect after re-attach"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let events = d.events();
    let tampers: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "sensor_tampered" && e["tamper"] == "link_detached")
        .collect();
    assert_eq!(tampers.len(), 2, "{tampers:?}");
    assert!(
        tampers
            .iter()
            .all(|t| t["repaired"] == true && t["object"] == "vigil_connect4")
    );
    assert!(st.sensor_tampers >= 2, "{st:?}");
}

#[test]
fn a_detached_link_is_attached_again_within_the_check_interval() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(&agents());
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let mut s = Served::start(&d, "coder", "s-fast");
    d.vigil_ok(&["revoke", "coder", "--session", "s-fast", "--reason", "fast"]);
    let api = d.api();
    let mut worst = Duration::ZERO;
    for n in 1..=5 {
        assert_eq!(s.ask(&format!("connect {addr}")).as_deref(), Some(EPERM));
        let at = Instant::now();
        detach(&link_pin(&d, "vigil_connect4"));
        loop {
            let st = api.status().unwrap();
            let p = program(&st, "vigil_connect4");
            if p.attached && p.reattached == n {
                break;
            }
            assert!(
                at.elapsed() < Duration::from_secs(2),
                "not re-attached: {st:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        worst = worst.max(at.elapsed());
    }
    assert_eq!(s.ask(&format!("connect {addr}")).as_deref(), Some(EPERM));
    eprintln!("connect4 re-attached at most {worst:?} after a detach (checks every 100 ms)");
    assert!(worst < Duration::from_millis(500), "{worst:?}");
}

/// The unix socket hooks are loaded by the daemon itself (aya knows no unix
/// attach type), and a detached one is put back all the same.
#[test]
fn a_detached_unix_link_is_attached_again() {
    if !kernel_available() {
        return;
    }
    let wl = workload_bin().to_str().unwrap().to_owned();
    let d = Daemon::start(&format!(
        r#"
[[agent]]
name = "coder"
  [agent.match]
  sessions = true

[[agent]]
name = "guarded"
enforce = true
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1"]
  tools = ["{wl}"]
"#
    ));
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("daemon.sock");
    let _server = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let sock = sock.to_str().unwrap().to_owned();
    let try_connect = |session: &str| {
        let out = d.exec("guarded", session, &[&wl, "unix", "stream", &sock]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(try_connect("s-unix-1"), EPERM);
    detach(&link_pin(&d, "vigil_connect_unix"));
    let api = d.api();
    let at = Instant::now();
    loop {
        let st = api.status().unwrap();
        let p = program(&st, "vigil_connect_unix");
        if p.attached && p.reattached == 1 {
            break;
        }
        assert!(
            at.elapsed() < Duration::from_secs(2),
            "not re-attached: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(try_connect("s-unix-2"), EPERM, "{}", d.log());
    d.wait_for("the detach", |e| {
        e["kind"] == "sensor_tampered"
            && e["tamper"] == "link_detached"
            && e["object"] == "vigil_connect_unix"
    });
}
