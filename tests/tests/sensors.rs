//! The kernel sensors and the event pipeline, against the real
//! kernel with a real daemon and real workloads.

// Paths are written into TOML with `{:?}` (a quoted, escaped string), and
// small helpers sit next to the steps that use them.
#![allow(clippy::unnecessary_debug_formatting, clippy::items_after_statements)]

use std::{
    io::{BufRead as _, BufReader},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
};

use serde_json::Value;
use vigil_harness::bpf_stats::Counting;
use vigil_tests::{CODER_AGENT, Daemon, Served, kernel_available, of, workload_bin};

fn wl() -> String {
    workload_bin().to_str().unwrap().to_owned()
}

fn argv_has(e: &Value, needle: &str) -> bool {
    e["argv"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == needle))
}

#[test]
fn exec_in_session_is_one_attributed_event_with_argv() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(CODER_AGENT);
    let out = d.exec(
        "coder",
        "s-exec",
        &["/bin/echo", "vigil-marker-exec", "two words"],
    );
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    let e = d.wait_for("echo exec", |e| {
        e["kind"] == "exec" && argv_has(e, "vigil-marker-exec")
    });
    assert_eq!(e["identity"]["agent"], "coder");
    assert_eq!(e["identity"]["session"], "s-exec");
    assert_eq!(
        e["argv"],
        serde_json::json!(["/bin/echo", "vigil-marker-exec", "two words"])
    );
    assert!(e["filename"].as_str().unwrap().ends_with("/echo"), "{e}");
    assert!(e["process"]["pid"].as_u64().unwrap() > 0);
    assert!(e["process"]["ppid"].as_u64().unwrap() > 0);
    assert!(
        e["identity"]["cgroup"]
            .as_str()
            .unwrap()
            .ends_with("/coder/s-exec")
    );
    d.settle();
    let execs: Vec<Value> = of(&d.events(), "exec", "s-exec")
        .into_iter()
        .filter(|e| argv_has(e, "vigil-marker-exec"))
        .collect();
    assert_eq!(execs.len(), 1, "exactly one exec event: {execs:?}");
}

#[test]
fn exec_argv_is_what_the_program_received_up_to_1_kib() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(CODER_AGENT);
    // 40 short arguments (one empty): all of them, as the program sees them.
    let mut many: Vec<String> = vec!["/bin/echo".into(), "vigil-many".into()];
    many.extend((0..38).map(|i| {
        if i == 7 {
            String::new()
        } else {
            format!("a{i}")
        }
    }));
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let out = d.exec("coder", "s-many-args", &refs);
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    let e = d.wait_for("exec with 40 arguments", |e| {
        e["kind"] == "exec" && argv_has(e, "vigil-many")
    });
    assert_eq!(e["argv"], serde_json::json!(many), "{e}");
    assert_eq!(e["argv_truncated"], false, "{e}");
    // Over 1 KiB of arguments: the first KiB, flagged.
    let long = "x".repeat(600);
    let out = d.exec(
        "coder",
        "s-long-args",
        &["/bin/echo", "vigil-long", &long, &long, "never-seen"],
    );
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    let e = d.wait_for("exec with 1.2 KiB of arguments", |e| {
        e["kind"] == "exec" && argv_has(e, "vigil-long")
    });
    assert_eq!(e["argv_truncated"], true, "{e}");
    let argv: Vec<&str> = e["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(argv[..3], ["/bin/echo", "vigil-long", long.as_str()], "{e}");
    // Each argument but the cut last one is followed by its NUL.
    let kept: usize = argv.iter().map(|a| a.len()).sum::<usize>() + argv.len() - 1;
    assert_eq!(kept, 1024, "1 KiB kept, the last argument cut: {e}");
    assert!(!argv_has(&e, "never-seen"));
    // A script started through its `#!` line: the interpreter's argv.
    let script = d.dir.path().join("vigil-script.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = script.to_str().unwrap();
    let out = d.exec("coder", "s-script", &[script, "vigil-script-arg"]);
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    let e = d.wait_for("script exec", |e| {
        e["kind"] == "exec" && argv_has(e, "vigil-script-arg")
    });
    assert_eq!(
        e["argv"],
        serde_json::json!(["/bin/sh", script, "vigil-script-arg"]),
        "{e}"
    );
}

#[test]
fn children_and_grandchildren_are_attributed_with_lineage() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(CODER_AGENT);
    let out = d.exec(
        "coder",
        "s-tree",
        &[
            "/bin/sh",
            "-c",
            "/bin/sh -c '/bin/true vigil-grandchild'; true",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let e = d.wait_for("grandchild exec", |e| {
        e["kind"] == "exec" && argv_has(e, "vigil-grandchild")
    });
    assert_eq!(e["identity"]["agent"], "coder");
    assert_eq!(e["identity"]["session"], "s-tree");
    let lineage = e["process"]["lineage"].as_array().unwrap();
    assert!(lineage.len() >= 3, "lineage reaches the session root: {e}");
    assert_eq!(lineage[0], e["process"]["pid"]);
    let forks = of(&d.events(), "fork", "s-tree");
    assert!(!forks.is_empty(), "fork events from the session");
}

fn connect_test(bind: &str, remote_ip: &str) {
    let d = Daemon::start(CODER_AGENT);
    let listener = TcpListener::bind(bind).unwrap();
    let addr = listener.local_addr().unwrap();
    let out = d.exec("coder", "s-net", &[&wl(), "connect", &addr.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let e = d.wait_for("connect", |e| {
        e["kind"] == "connect" && e["port"] == addr.port() && e["identity"]["session"] == "s-net"
    });
    assert_eq!(e["address"], remote_ip);
    assert_eq!(e["protocol"], "tcp");
    assert_eq!(e["op"], "connect");
    assert_eq!(e["identity"]["agent"], "coder");
}

#[test]
fn tcp_connect_ipv4_is_reported() {
    if kernel_available() {
        connect_test("127.0.0.1:0", "127.0.0.1");
    }
}

#[test]
fn tcp_connect_ipv6_is_reported() {
    if kernel_available() {
        connect_test("[::1]:0", "::1");
    }
}

#[test]
fn udp_send_is_reported() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(CODER_AGENT);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let out = d.exec(
        "coder",
        "s-udp",
        &[&wl(), "udp", &format!("127.0.0.1:{port}")],
    );
    assert!(out.status.success(), "{out:?}");
    let e = d.wait_for("udp send", |e| e["kind"] == "connect" && e["port"] == port);
    assert_eq!(e["protocol"], "udp");
    assert_eq!(e["op"], "sendmsg");
    assert_eq!(e["address"], "127.0.0.1");
}

#[test]
fn accepted_connection_is_attributed_to_the_listening_session() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(CODER_AGENT);
    let mut child = Command::new(vigil_tests::vigil_bin())
        .args([
            "exec",
            "--agent",
            "coder",
            "--session",
            "s-accept",
            "--",
            &wl(),
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
    let client = TcpStream::connect(addr).unwrap();
    let local = client.local_addr().unwrap();
    drop(client);
    child.wait().unwrap();
    let e = d.wait_for("accept", |e| {
        e["kind"] == "accept" && e["local_port"] == addr.port()
    });
    assert_eq!(e["identity"]["agent"], "coder");
    assert_eq!(e["identity"]["session"], "s-accept");
    assert_eq!(e["remote_port"], local.port());
    assert_eq!(e["remote_address"], "127.0.0.1");
}

#[test]
fn file_opens_have_absolute_paths_and_errors() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(CODER_AGENT);
    let work = d.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("present.txt"), "x").unwrap();
    let out = Command::new(vigil_tests::vigil_bin())
        .args([
            "exec",
            "--agent",
            "coder",
            "--session",
            "s-file",
            "--",
            &wl(),
            "open",
            "present.txt",
        ])
        .env("VIGIL_SOCKET", &d.socket)
        .current_dir(&work)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let missing = work.join("missing.txt");
    let out = d.exec(
        "coder",
        "s-file2",
        &[&wl(), "open", missing.to_str().unwrap()],
    );
    assert!(!out.status.success(), "opening a missing file fails");
    let present = work.join("present.txt");
    let e = d.wait_for("relative open", |e| {
        e["kind"] == "file_open" && e["path"] == present.to_str().unwrap()
    });
    assert_eq!(e["raw_path"], "present.txt");
    assert_eq!(e["access"], "read");
    assert!(e["fd"].as_i64().unwrap() >= 0);
    assert_eq!(e["identity"]["session"], "s-file");
    let e = d.wait_for("failed open", |e| {
        e["kind"] == "file_open" && e["path"] == missing.to_str().unwrap()
    });
    assert_eq!(e["error"], "ENOENT");
    assert!(e.get("fd").is_none());
}

#[test]
fn processes_outside_sessions_are_not_reported() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(CODER_AGENT);
    let out = Command::new("/bin/echo")
        .arg("vigil-marker-outside")
        .output()
        .unwrap();
    assert!(out.status.success());
    let outside = std::env::temp_dir().join("vigil-outside-marker");
    let _ = std::fs::File::create(&outside);
    d.settle();
    let events = d.events();
    assert!(
        !events
            .iter()
            .any(|e| argv_has(e, "vigil-marker-outside") || e["path"] == outside.to_str().unwrap()),
        "an unwatched process was reported:\n{}",
        d.dump()
    );
    assert!(
        events
            .iter()
            .filter(|e| e.get("process").is_some())
            .all(|e| e["identity"]["session"].is_string()),
        "every process event comes from a session:\n{}",
        d.dump()
    );
}

#[test]
fn repeated_opens_are_counted_in_the_kernel_and_add_up_exactly() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(CODER_AGENT);
    let target = d.dir.path().join("repeated.txt");
    std::fs::write(&target, "x").unwrap();
    let target = target.to_str().unwrap().to_owned();
    let n = 20_000u64;
    let out = d.exec(
        "coder",
        "s-repeat",
        &[&wl(), "flood-open", &target, &n.to_string()],
    );
    assert!(out.status.success(), "{out:?}");
    // Each report stands for one open plus its repeats; a summary (after
    // the process stopped repeating, here when it exits) for its repeats.
    let count = |events: &[serde_json::Value]| {
        let mine: Vec<_> = events
            .iter()
            .filter(|e| e["kind"] == "file_open" && e["path"] == target.as_str())
            .collect();
        let total: u64 = mine
            .iter()
            .map(|e| {
                let own = u64::from(e["repeat_summary"] != true);
                own + e["repeats"].as_u64().unwrap_or(0)
            })
            .sum();
        (mine.len(), total)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let (reports, total) = loop {
        let (reports, total) = count(&d.events());
        if total >= n || std::time::Instant::now() > deadline {
            break (reports, total);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(
        total, n,
        "every open is accounted for, once ({reports} reports)"
    );
    assert!(
        reports < 100,
        "identical opens are counted, not reported one by one: {reports} reports"
    );
    let summary = d
        .events()
        .into_iter()
        .find(|e| e["kind"] == "file_open" && e["repeat_summary"] == true)
        .expect("the repeats after the last report arrive in a summary");
    assert_eq!(summary["identity"]["session"], "s-repeat");
    assert!(summary["repeats"].as_u64().unwrap() > 0);
}

#[test]
fn repeat_tracking_stays_bounded_for_a_process_opening_ever_new_files() {
    use vigil::daemon::repeats::PRUNE_ABOVE;
    use vigil_tests::kube::{count, free_port, scrape};
    if !kernel_available() {
        return;
    }
    let port = free_port();
    // The burst of opens is faster than a debug daemon reads: the ring
    // holds all of them (about 600 bytes each), so every one is reported
    // and what is measured is the tracking, not the ring.
    let d = Daemon::start_with(
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n{CODER_AGENT}"),
        "ring_buffer_bytes = 67108864\n",
    );
    // One long-lived process (no exit forgets its keys) makes more
    // distinct opens than the kernel's LRU of counters holds.
    let mut s = Served::start(&d, "coder", "s-many");
    let n = PRUNE_ABOVE + PRUNE_ABOVE / 2;
    let prefix = d.dir.path().join("missing-dir").join("f-");
    let answer = s.ask(&format!("open-many {} {n}", prefix.display()));
    assert_eq!(answer.as_deref(), Some("ok 0"), "{}", d.log());
    // Every open is reported (none was a repeat) ...
    let reported = || {
        d.events()
            .iter()
            .filter(|e| {
                e["kind"] == "file_open"
                    && e["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with(prefix.to_str().unwrap()))
            })
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while reported() < n && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert_eq!(
        reported(),
        n,
        "one report per distinct open; losses: {:?}",
        d.events()
            .iter()
            .filter(|e| e["kind"] == "loss")
            .collect::<Vec<_>>()
    );
    // ... and once they are all read, the daemon tracks no more keys than
    // the kernel map holds, while the process lives on.
    let keys = || {
        let text = scrape(([127, 0, 0, 1], port).into()).expect("scraping /metrics");
        count(&text, "vigil_file_open_repeat_keys").expect("the repeat-keys gauge")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let k = keys();
        seen.push(k);
        if k > 0 && k <= u64::from(vigil_common::OPEN_SEEN_ENTRIES) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon still tracks more keys than the kernel map holds (gauge over time: {seen:?}):\n{}",
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(s.ask("open /").as_deref(), Some("ok"));
}

#[test]
fn the_reader_thread_runs_at_the_configured_priority_and_the_journal_has_its_own() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start_with(CODER_AGENT, "reader_nice = -7");
    let pid = d.pid().expect("daemon running");
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let reader = tasks
        .filter_map(Result::ok)
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "vigil-reader")
        })
        .expect("a vigil-reader thread");
    // The journal commits on a thread of its own, not on the runtime's.
    assert!(
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(Result::ok)
            .any(|t| std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim() == "vigil-journal")),
        "a vigil-journal thread"
    );
    // Field 19 of stat is the nice value; the comm (field 2) has no spaces here.
    let stat = std::fs::read_to_string(reader.path().join("stat")).unwrap();
    let nice: i32 = stat.split_whitespace().nth(18).unwrap().parse().unwrap();
    assert_eq!(nice, -7, "{stat}");
    // The short slice the reader asks for (sched_setattr), in ns.
    let sched = std::fs::read_to_string(reader.path().join("sched")).unwrap_or_default();
    if let Some(line) = sched.lines().find(|l| l.starts_with("se.slice")) {
        let slice: u64 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
        assert_eq!(slice, 100_000, "{line}");
    }
}

#[test]
fn ring_buffer_overflow_is_counted_and_the_daemon_survives() {
    if !kernel_available() {
        return;
    }
    // The smallest ring the kernel allows: a flood must overflow it.
    // Repeat counting off: every open of the flood is a record.
    let mut d = Daemon::start_with(CODER_AGENT, "ring_buffer_bytes = 4096\nopen_repeat_ms = 0");
    let out = d.exec(
        "coder",
        "s-flood",
        &[&wl(), "flood-open", "/dev/null", "200000"],
    );
    assert!(out.status.success(), "{out:?}");
    let e = d.wait_for("loss event", |e| {
        e["kind"] == "loss" && e["sensor"] == "file"
    });
    assert!(e["lost"].as_u64().unwrap() > 0);
    assert!(d.alive(), "daemon died:\n{}", d.log());
    let status = d.vigil(&["status"]);
    assert!(status.status.success());
    let text = String::from_utf8_lossy(&status.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("sensor") && l.contains("file"))
        .unwrap();
    assert!(!line.ends_with("lost 0"), "status shows the loss: {text}");
    d.settle();
}

/// `vigil status` says what each program costs the node while the kernel
/// counts it, and how to have it counted while it does not.
#[test]
fn status_reports_what_each_program_costs_the_node() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(CODER_AGENT);
    let file = d.dir.path().join("costed.txt");
    std::fs::write(&file, "x").unwrap();
    {
        let _off = Counting::set(false).unwrap();
        assert!(!d.api().status().unwrap().program_stats);
        let text = d.vigil_ok(&["status"]);
        assert!(
            text.contains("cost      not counted (sysctl kernel.bpf_stats_enabled=1"),
            "{text}"
        );
    }
    let _on = Counting::set(true).unwrap();
    for i in 0..3 {
        let out = d.exec(
            "coder",
            &format!("s-cost-{i}"),
            &[&wl(), "open", file.to_str().unwrap()],
        );
        assert!(out.status.success(), "{out:?}");
    }
    let status = d.api().status().unwrap();
    assert!(status.program_stats);
    let open: Vec<_> = status
        .sensors
        .iter()
        .flat_map(|s| &s.programs)
        .filter(|p| p.program == "vigil_open_exit")
        .collect();
    assert!(!open.is_empty(), "{status:?}");
    // Its links (one per open syscall) share one program and its figures.
    assert!(
        open.iter()
            .all(|p| p.program_id == open[0].program_id && p.program_id != 0)
    );
    assert!(
        open[0].run_count >= 3 && open[0].run_time_ns > 0,
        "{:?}",
        open[0]
    );
    let text = d.vigil_ok(&["status"]);
    let line = text
        .lines()
        .find(|l| l.starts_with("cost      vigil_open_exit "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(" runs ") && line.contains(" ns/run "),
        "{line}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("cost      vigil_open_exit "))
            .count(),
        1,
        "{text}"
    );
}
