//! The gRPC API, the journal behind its stream, and access control,
//! against a real daemon on the real kernel.

// Paths are written into TOML with `{:?}` (a quoted, escaped string), and
// small helpers sit next to the steps that use them.
#![allow(clippy::unnecessary_debug_formatting, clippy::items_after_statements)]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    time::Duration,
};

use vigil::api::client::{ClientFiles, Target};
use vigil_tests::{
    Api, CODER_AGENT, Daemon, STREAM_WAIT, assert_contiguous, exec_has, kernel_available, kind, pb,
    workload_bin,
};

use pb::subscribe_request::Start;

fn wl() -> String {
    workload_bin().to_str().unwrap().to_owned()
}

fn from(start: Start) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        start: Some(start),
        filter: None,
    }
}

fn now() -> pb::SubscribeRequest {
    from(Start::Now(true))
}

/// Runs `/bin/echo MARKER` in a session: a recognisable exec to wait for.
fn marker(d: &Daemon, session: &str, marker: &str) {
    let out = d.exec("coder", session, &["/bin/echo", marker]);
    assert!(out.status.success(), "{out:?}\n{}", d.log());
}

fn is_marker(m: &str) -> impl Fn(&pb::Event) -> bool + '_ {
    move |e| exec_has(e, m)
}

/// `coder` as in [`CODER_AGENT`], but the only system it may reach is
/// 127.0.0.1:1: a connect anywhere else is an anomaly.
const NARROW_CODER: &str = r#"
[[agent]]
name = "coder"
on_violation = "alert"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1:1"]
  tools = ["/**"]
  data = ["everything"]

[data.everything]
read = ["/**"]
write = ["/**"]
"#;

#[test]
fn a_subscriber_receives_exec_connect_and_file_events() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(NARROW_CODER);
    let api = d.api();
    let mut sub = api.subscribe(now()).unwrap();
    let start = api.newest();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let file = d.dir.path().join("read-me.txt");
    std::fs::write(&file, "x").unwrap();
    let script = format!(
        "{wl} connect 127.0.0.1:{port} && {wl} open {file} && /bin/echo api-marker-1",
        wl = wl(),
        file = file.display()
    );
    let out = d.exec("coder", "s-sub", &["/bin/sh", "-c", &script]);
    assert!(out.status.success(), "{out:?}");
    let events = sub.until("marker exec", is_marker("api-marker-1"));

    // Nothing was filtered, so the stream is every sequence, in order.
    let first = events[0].sequence;
    assert!(first > start, "Now starts after the newest event");
    assert_contiguous(&events, first, events.last().unwrap().sequence);
    let node = api.status().unwrap().node;
    let ours = |e: &&pb::Event| {
        e.identity
            .as_ref()
            .is_some_and(|i| i.agent == "coder" && i.session == "s-sub")
    };
    let connect = events
        .iter()
        .filter(ours)
        .find_map(|e| match &e.payload {
            Some(pb::event::Payload::Connect(c)) if c.port == u32::from(port) => Some((e, c)),
            _ => None,
        })
        .expect("connect event");
    assert_eq!(connect.1.address, "127.0.0.1");
    assert_eq!(connect.0.node, node);
    assert!(connect.0.process.as_ref().unwrap().pid > 0);
    assert!(connect.0.kernel_ts_ns > 0);
    let open = events.iter().filter(ours).find_map(|e| match &e.payload {
        Some(pb::event::Payload::FileOpen(f)) if Path::new(&f.path) == file => Some(f),
        _ => None,
    });
    assert!(open.is_some(), "file_open of {}", file.display());
    let exec = events
        .iter()
        .filter(ours)
        .find(|e| exec_has(e, "api-marker-1"))
        .expect("exec event");
    assert_eq!(exec.process.as_ref().unwrap().argv[1], "api-marker-1");
    assert!(
        events.iter().any(|e| kind(e) == "session_start"),
        "daemon-made events are journaled and streamed too"
    );
    // The connect left the declared scope: its anomaly follows it.
    let anomaly = events
        .iter()
        .find_map(|e| match &e.payload {
            Some(pb::event::Payload::Anomaly(a)) => Some((e, a)),
            _ => None,
        })
        .expect("an anomaly for the out-of-scope connect");
    assert_eq!(anomaly.1.kind, i32::from(pb::AnomalyKind::UnapprovedSystem));
    assert!(anomaly.0.sequence > connect.0.sequence);
    let offending = anomaly.1.offending.as_ref().expect("the offending event");
    assert!(
        matches!(&offending.payload, Some(pb::event::Payload::Connect(c)) if c.port == u32::from(port)),
        "{offending:?}"
    );

    // The JSON-lines output carries the same sequences.
    let json = d.wait_for("marker in JSON", |e| {
        e["kind"] == "exec" && e["argv"][1] == "api-marker-1"
    });
    assert_eq!(json["seq"], exec.sequence);
}

/// Runs a few markers and returns the sequence of the last one.
fn activity(d: &Daemon, api: &Api, session: &str, name: &str) -> u64 {
    let mut sub = api.subscribe(now()).unwrap();
    for i in 0..3 {
        marker(d, &format!("{session}-{i}"), &format!("{name}-{i}"));
    }
    let last = format!("{name}-2");
    sub.until(&last, is_marker(&last)).last().unwrap().sequence
}

#[test]
fn resuming_after_a_sequence_returns_exactly_the_missed_events() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(CODER_AGENT);
    let api = d.api();
    let mut sub = api.subscribe(now()).unwrap();
    marker(&d, "s-before", "resume-before");
    let seen = sub.until("first marker", is_marker("resume-before"));
    let n = seen.last().unwrap().sequence;
    drop(sub);

    let m = activity(&d, &api, "s-missed", "resume-missed");
    assert!(m > n);
    let mut resumed = api.subscribe(from(Start::AfterSequence(n))).unwrap();
    let missed = resumed.through(m);
    assert_contiguous(&missed, n + 1, m);
    assert!(missed.iter().any(is_marker("resume-missed-0")));
    assert!(!missed.iter().any(is_marker("resume-before")));
    // The resumed stream goes on live, without repeating anything.
    marker(&d, "s-after", "resume-after");
    let live = resumed.until("live marker", is_marker("resume-after"));
    assert_contiguous(&live, m + 1, live.last().unwrap().sequence);

    // The same events, byte for byte, as a replay from the oldest.
    let mut oldest = api.subscribe(from(Start::Oldest(true))).unwrap();
    let all = oldest.through(m);
    assert_eq!(all.first().unwrap().sequence, 1);
    assert_eq!(&all[usize::try_from(n).unwrap()..], &missed[..]);
}

#[test]
fn resuming_works_across_a_daemon_restart() {
    if !kernel_available() {
        return;
    }
    let mut d = Daemon::start(CODER_AGENT);
    let n = {
        let api = d.api();
        let n = activity(&d, &api, "s-r1", "restart-a");
        activity(&d, &api, "s-r2", "restart-b");
        n
    };
    let before = d.api().newest();
    d.stop();
    d.spawn();
    let api = d.api();
    let after = activity(&d, &api, "s-r3", "restart-c");
    let mut resumed = api.subscribe(from(Start::AfterSequence(n))).unwrap();
    let events = resumed.through(after);
    assert_contiguous(&events, n + 1, after);
    assert!(events.iter().any(is_marker("restart-b-2")));
    let c0 = events
        .iter()
        .find(|e| exec_has(e, "restart-c-0"))
        .expect("an event after the restart");
    assert!(
        c0.sequence > before,
        "the sequence continues after a restart"
    );
    assert_eq!(api.status().unwrap().journal.unwrap().gaps_sent, 0);
}

#[test]
fn the_journal_survives_kill_9() {
    if !kernel_available() {
        return;
    }
    // Every open of the flood is an event (no repeat counting).
    let mut d = Daemon::start_with(CODER_AGENT, "open_repeat_ms = 0");
    let (n, newest) = {
        let api = d.api();
        let n = activity(&d, &api, "s-k1", "kill-a");
        // Keep the daemon busy while it is killed: a commit may be in flight.
        let flood = std::process::Command::new(vigil_tests::vigil_bin())
            .args([
                "exec",
                "--agent",
                "coder",
                "--session",
                "s-kflood",
                "--",
                &wl(),
            ])
            .args(["flood-open", "/dev/null", "20000"])
            .env("VIGIL_SOCKET", &d.socket)
            .output()
            .unwrap();
        assert!(flood.status.success(), "{flood:?}");
        (n, api.newest())
    };
    d.kill9();
    d.spawn();
    let api = d.api();
    let status = api.status().unwrap().journal.unwrap();
    // Everything a client could have seen (it was committed) is still there.
    assert!(
        status.newest_sequence >= newest,
        "newest {} < {newest} seen before the crash",
        status.newest_sequence
    );
    let mut replay = api.subscribe(from(Start::Oldest(true))).unwrap();
    let all = replay.through(status.newest_sequence);
    assert_contiguous(&all, 1, status.newest_sequence);
    assert!(all.iter().any(is_marker("kill-a-2")));
    // Resuming from before the crash, and writing after it, both work.
    let after = activity(&d, &api, "s-k2", "kill-b");
    assert!(after > status.newest_sequence);
    let mut resumed = api.subscribe(from(Start::AfterSequence(n))).unwrap();
    let events = resumed.through(after);
    assert_contiguous(&events, n + 1, after);
}

#[test]
fn a_stalled_subscriber_holds_no_one_up_and_gets_a_correct_gap() {
    if !kernel_available() {
        return;
    }
    const FLOOD: u64 = 100_000;
    // A ring big enough for the flood, a journal far smaller than it.
    let config = format!("{CODER_AGENT}\n[journal]\nmax_bytes = 2000000\n");
    // Every open of the flood is an event (no repeat counting).
    let d = Daemon::start_with(&config, "ring_buffer_bytes = 134217728\nopen_repeat_ms = 0");
    let api = d.api();

    let mut stalled = api.subscribe(now()).unwrap();
    marker(&d, "s-gap-0", "gap-start");
    let read = stalled.until("start marker", is_marker("gap-start"));
    let stalled_at = read.last().unwrap().sequence;

    // A subscriber that keeps reading, on its own task.
    let mut fast = api.subscribe(now()).unwrap();
    let reader = api.rt.spawn(async move {
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(STREAM_WAIT, fast.inner.message()).await {
                Ok(Ok(Some(r))) => {
                    let e = r.event.unwrap();
                    let done = exec_has(&e, "gap-end");
                    got.push(e);
                    if done {
                        return Ok(got);
                    }
                }
                other => return Err(format!("fast subscriber stopped: {other:?}")),
            }
        }
    });
    let out = d.exec(
        "coder",
        "s-gap-flood",
        &[&wl(), "flood-open", "/dev/null", &FLOOD.to_string()],
    );
    assert!(out.status.success(), "{out:?}");
    marker(&d, "s-gap-1", "gap-end");
    let fast_events = api.call(reader).unwrap().unwrap();
    let end = fast_events.last().unwrap().sequence;
    assert_contiguous(&fast_events, fast_events[0].sequence, end);
    let flooded = fast_events
        .iter()
        .filter(|e| {
            e.identity
                .as_ref()
                .is_some_and(|i| i.session == "s-gap-flood")
        })
        .count() as u64;
    let status = api.status().unwrap();
    let lost: u64 = status.sensors.iter().map(|s| s.lost).sum();
    // Kernel loss is possible and counted; what reached the journal all streamed.
    assert!(
        flooded + lost >= FLOOD,
        "{flooded} flood events streamed, {lost} lost in the kernel"
    );
    let journal = status.journal.unwrap();
    assert!(journal.pruned_events > 0, "retention pruned: {journal:?}");
    assert!(journal.oldest_sequence > stalled_at + 1);

    // The stalled one: what the transport had buffered, then a gap for
    // exactly what was pruned, then every retained event. On a loaded node
    // the daemon may still be journaling (and pruning) while the stalled
    // subscriber catches up, so more than one gap can come: each must name
    // exactly the sequences it skips, and nothing may repeat or go missing.
    let rest = stalled.until("end marker", is_marker("gap-end"));
    let mut expected = stalled_at + 1;
    let mut gaps = 0;
    let mut first_gap = None;
    for e in &rest {
        if let Some(pb::event::Payload::Gap(g)) = &e.payload {
            first_gap.get_or_insert((g.first_missing, g.last_missing));
            assert_eq!(
                g.first_missing, expected,
                "gap starts where the stream stopped"
            );
            assert!(g.last_missing >= g.first_missing);
            assert_eq!(
                e.sequence, g.last_missing,
                "a gap event carries its last sequence"
            );
            expected = g.last_missing + 1;
            gaps += 1;
        } else {
            assert_eq!(
                e.sequence, expected,
                "no event skipped or repeated outside a gap"
            );
            expected += 1;
        }
    }
    assert!(gaps >= 1, "the pruned range was reported as a gap");
    assert_eq!(
        expected,
        end + 1,
        "the stalled subscriber reached the end marker"
    );
    let (first_missing, last_missing) = first_gap.expect("a gap");
    let journal = api.status().unwrap().journal.unwrap();
    assert!(journal.gaps_sent >= 1);
    // What the gap named is really gone: asking for it again gets a gap too.
    assert!(
        last_missing < journal.oldest_sequence,
        "{last_missing} is retained"
    );
    let again = api
        .subscribe(from(Start::AfterSequence(first_missing - 1)))
        .unwrap()
        .next_within(STREAM_WAIT)
        .unwrap();
    match again.payload {
        Some(pb::event::Payload::Gap(g)) => {
            assert_eq!(g.first_missing, first_missing);
            assert!(g.last_missing >= last_missing);
        }
        other => panic!("expected a gap, got {other:?}"),
    }
}

#[test]
fn filters_return_only_what_they_ask_for() {
    if !kernel_available() {
        return;
    }
    // Narrow systems: the connect raises an anomaly for the severity filters.
    let d = Daemon::start(NARROW_CODER);
    let api = d.api();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let out = d.exec("coder", "s-fa", &[&wl(), "connect", &addr]);
    assert!(out.status.success());
    let out = d.exec("coder", "s-fb", &[&wl(), "open", "/etc/hostname"]);
    assert!(out.status.success());
    let end = activity(&d, &api, "s-fc", "filter-end");
    let all = api
        .subscribe(from(Start::Oldest(true)))
        .unwrap()
        .through(end);
    assert_contiguous(&all, 1, end);

    let session = |e: &pb::Event| {
        e.identity
            .as_ref()
            .map_or(String::new(), |i| i.session.clone())
    };
    let agent = |e: &pb::Event| {
        e.identity
            .as_ref()
            .map_or(String::new(), |i| i.agent.clone())
    };
    type Check = Box<dyn Fn(&pb::Event) -> bool>;
    let cases: Vec<(pb::EventFilter, Check)> = vec![
        (
            pb::EventFilter {
                sessions: vec!["s-fa".into()],
                ..Default::default()
            },
            Box::new(move |e| session(e) == "s-fa"),
        ),
        (
            pb::EventFilter {
                kinds: vec![pb::EventKind::Exec.into(), pb::EventKind::Connect.into()],
                ..Default::default()
            },
            Box::new(|e| matches!(kind(e).as_str(), "exec" | "connect")),
        ),
        (
            pb::EventFilter {
                agents: vec!["coder".into()],
                sessions: vec!["s-fb".into()],
                kinds: vec![pb::EventKind::FileOpen.into()],
                ..Default::default()
            },
            Box::new(move |e| {
                kind(e) == "file_open" && session(e) == "s-fb" && agent(e) == "coder"
            }),
        ),
        (
            pb::EventFilter {
                agents: vec!["someone-else".into()],
                ..Default::default()
            },
            Box::new(|_| false),
        ),
        (
            pb::EventFilter {
                anomalies_only: true,
                ..Default::default()
            },
            Box::new(|e| kind(e) == "anomaly"),
        ),
    ];
    // Every event but an anomaly counts as info.
    let severity = |e: &pb::Event| match &e.payload {
        Some(pb::event::Payload::Anomaly(a)) => a.severity,
        _ => i32::from(pb::Severity::Info),
    };
    let mut cases = cases;
    for min in [
        pb::Severity::Info,
        pb::Severity::Low,
        pb::Severity::High,
        pb::Severity::Critical,
    ] {
        cases.push((
            pb::EventFilter {
                min_severity: min.into(),
                ..Default::default()
            },
            Box::new(move |e| severity(e) >= i32::from(min)),
        ));
    }
    for (filter, pass) in cases {
        let want: Vec<u64> = all.iter().filter(|e| pass(e)).map(|e| e.sequence).collect();
        let mut sub = api
            .subscribe(pb::SubscribeRequest {
                start: Some(Start::Oldest(true)),
                filter: Some(filter.clone()),
            })
            .unwrap();
        let got: Vec<u64> = sub
            .drain_quiet(Duration::from_secs(2))
            .iter()
            .map(|e| e.sequence)
            // The markers' processes go on (exits) after the last one read above.
            .filter(|&seq| seq <= end)
            .collect();
        assert_eq!(got, want, "{filter:?}");
    }
    // The cases are not vacuous.
    assert!(
        all.iter()
            .any(|e| kind(e) == "connect" && session(e) == "s-fa")
    );
    assert!(
        all.iter()
            .any(|e| kind(e) == "anomaly" && session(e) == "s-fa")
    );
    assert!(
        all.iter()
            .any(|e| kind(e) == "file_open" && session(e) == "s-fb")
    );

    // The CLI speaks the same filters.
    let out = d.vigil(&[
        "watch",
        "--oldest",
        "--session",
        "s-fa",
        "--kind",
        "connect",
        "--json",
        "--count",
        "1",
    ]);
    assert!(out.status.success(), "{out:?}");
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["kind"], "connect");
    assert_eq!(line["identity"]["session"], "s-fa");
    assert!(line["seq"].as_u64().unwrap() > 0);
}

#[test]
fn invalid_requests_get_real_status_codes() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(CODER_AGENT);
    let api = d.api();
    let code = |r: Result<vigil_tests::Stream, tonic::Status>| {
        r.err().map(|s| (s.code(), s.message().to_owned()))
    };
    let bad_kind = pb::SubscribeRequest {
        start: None,
        filter: Some(pb::EventFilter {
            kinds: vec![999],
            ..Default::default()
        }),
    };
    let (c, m) = code(api.subscribe(bad_kind)).unwrap();
    assert_eq!(c, tonic::Code::InvalidArgument);
    assert!(m.contains("filter.kinds: 999"), "{m}");
    let bad_severity = pb::SubscribeRequest {
        start: None,
        filter: Some(pb::EventFilter {
            min_severity: 77,
            ..Default::default()
        }),
    };
    assert_eq!(
        code(api.subscribe(bad_severity)).unwrap().0,
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(api.subscribe(from(Start::Oldest(false)))).unwrap().0,
        tonic::Code::InvalidArgument
    );
    let (c, m) = code(api.subscribe(from(Start::AfterSequence(1 << 40)))).unwrap();
    assert_eq!(c, tonic::Code::OutOfRange);
    assert!(m.contains("beyond the newest"), "{m}");

    let gov = |f: &dyn Fn() -> Result<(), tonic::Status>| f().unwrap_err().code();
    let g = api.governance();
    let get = |name: &str| {
        api.call(
            g.clone()
                .get_agent(pb::GetAgentRequest { name: name.into() }),
        )
        .map(|_| ())
    };
    assert_eq!(gov(&|| get("")), tonic::Code::InvalidArgument);
    assert_eq!(gov(&|| get("nobody")), tonic::Code::NotFound);
    let revoke = |agent: &str, session: &str, reason: &str| {
        api.call(g.clone().revoke(pb::RevokeRequest {
            agent: agent.into(),
            session: session.into(),
            reason: reason.into(),
        }))
        .map(|_| ())
    };
    assert_eq!(
        gov(&|| revoke("coder", "", " ")),
        tonic::Code::InvalidArgument
    );
    assert_eq!(gov(&|| revoke("nobody", "", "x")), tonic::Code::NotFound);
    assert_eq!(
        gov(&|| revoke("coder", "no-such-session", "x")),
        tonic::Code::NotFound
    );
    let restore = || {
        api.call(g.clone().restore(pb::RestoreRequest {
            agent: "coder".into(),
            session: String::new(),
            reason: "x".into(),
        }))
        .map(|_| ())
    };
    assert_eq!(gov(&restore), tonic::Code::FailedPrecondition);
    let approve = || {
        api.call(g.clone().approve_task(pb::ApproveTaskRequest::default()))
            .map(|_| ())
    };
    assert_eq!(gov(&approve), tonic::Code::InvalidArgument);

    let out = d.vigil(&["watch", "--after", "1099511627776"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OutOfRange"), "{err}");
}

#[test]
fn revoke_and_restore_are_journaled_with_the_caller() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(CODER_AGENT);
    let api = d.api();
    let mut sub = api.subscribe(now()).unwrap();
    let mut child = std::process::Command::new(vigil_tests::vigil_bin())
        .args([
            "exec",
            "--agent",
            "coder",
            "--session",
            "s-rev",
            "--",
            &wl(),
            "sleep",
            "30000",
        ])
        .env("VIGIL_SOCKET", &d.socket)
        .spawn()
        .unwrap();
    sub.until("session start", |e| kind(e) == "session_start");

    let out = d.vigil(&[
        "revoke",
        "coder",
        "--session",
        "s-rev",
        "--reason",
        "tried to exfiltrate",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("revoked session s-rev of agent coder (event "),
        "{text}"
    );
    let event = sub
        .until("revocation", |e| kind(e) == "revocation")
        .pop()
        .unwrap();
    let Some(pb::event::Payload::Revocation(r)) = &event.payload else {
        unreachable!()
    };
    assert_eq!((r.agent.as_str(), r.session.as_str()), ("coder", "s-rev"));
    assert_eq!(r.reason, "tried to exfiltrate");
    assert!(
        r.by.contains("uid 0 pid") && r.by.ends_with("(local socket)"),
        "{}",
        r.by
    );
    assert!(
        text.contains(&format!("(event {})", event.sequence)),
        "{text}"
    );

    let agent = api
        .call(api.governance().get_agent(pb::GetAgentRequest {
            name: "coder".into(),
        }))
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(
        agent.state,
        i32::from(pb::AgentState::Active),
        "only the session is revoked"
    );
    let session = agent
        .sessions
        .iter()
        .find(|s| s.id == "s-rev")
        .expect("active session");
    assert!(session.revoked);
    assert!(session.process_count >= 1);
    assert_eq!(agent.counters.unwrap().revocations, 1);
    assert_eq!(agent.scope.unwrap().tools, ["/**"]);

    let out = d.vigil(&["revoke", "coder", "--reason", "all of it"]);
    assert!(out.status.success(), "{out:?}");
    let agents = d.vigil(&["agents"]);
    let text = String::from_utf8_lossy(&agents.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("coder") && l.contains("REVOKED")),
        "{text}"
    );
    let out = d.vigil(&["restore", "coder", "--reason", "reviewed"]);
    assert!(out.status.success(), "{out:?}");
    let out = d.vigil(&[
        "restore",
        "coder",
        "--session",
        "s-rev",
        "--reason",
        "reviewed",
    ]);
    assert!(out.status.success(), "{out:?}");
    let kinds: Vec<String> = sub
        .until("second restore", {
            let restores = std::cell::Cell::new(0);
            move |e| {
                if kind(e) == "restore" {
                    restores.set(restores.get() + 1);
                }
                restores.get() == 2
            }
        })
        .iter()
        .map(kind)
        .filter(|k| k == "revocation" || k == "restore")
        .collect();
    assert_eq!(kinds, ["revocation", "restore", "restore"]);
    let _ = child.kill();
    let _ = child.wait();
}

// ---- TLS listener and roles -------------------------------------------------

struct Pki {
    dir: PathBuf,
}

/// A CA and the certificates it signs, as PEM files in `dir`.
struct Ca {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    /// A leaf certificate and key for `cn` with these SANs.
    fn issue(&self, cn: &str, sans: Vec<rcgen::SanType>, server: bool) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

impl Pki {
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Writes a client's files; returns them with the CA the client trusts.
    fn client(
        &self,
        name: &str,
        ca: &Ca,
        cn: &str,
        sans: Vec<rcgen::SanType>,
        trust: &Path,
    ) -> ClientFiles {
        let (cert, key) = ca.issue(cn, sans, false);
        ClientFiles {
            cert: self.write(&format!("{name}.crt"), &cert),
            key: self.write(&format!("{name}.key"), &key),
            ca: trust.to_owned(),
        }
    }

    /// (Re)writes the server's certificate, key and client CA.
    fn server(&self, server_ca: &Ca, client_ca: &Ca) {
        let (cert, key) = server_ca.issue(
            "vigil-test-server",
            vec![
                rcgen::SanType::DnsName("localhost".try_into().unwrap()),
                rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()),
            ],
            true,
        );
        // Key first: a reload that sees the new certificate with the old key fails.
        self.write("server.key", &key);
        self.write("server.crt", &cert);
        self.write("clients-ca.crt", &client_ca.pem);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct TlsSetup {
    d: Daemon,
    pki: Pki,
    endpoint: String,
    server_ca_file: PathBuf,
}

fn tls_daemon(server_ca: &Ca, client_ca: &Ca) -> TlsSetup {
    let dir = tempfile::tempdir().unwrap().keep();
    let pki = Pki { dir: dir.clone() };
    pki.server(server_ca, client_ca);
    let server_ca_file = pki.write("server-ca.crt", &server_ca.pem);
    let port = free_port();
    let config = format!(
        "{CODER_AGENT}\n[api]\nlisten = \"127.0.0.1:{port}\"\ncert = {cert:?}\nkey = {key:?}\nclient_ca = {ca:?}\n\
         [api.roles]\nsiem-reader = \"reader\"\n\"spiffe://test.vigil/ns/sec/sa/responder\" = \"operator\"\n",
        cert = dir.join("server.crt"),
        key = dir.join("server.key"),
        ca = dir.join("clients-ca.crt"),
    );
    let d = Daemon::start(&config);
    TlsSetup {
        d,
        pki,
        endpoint: format!("https://localhost:{port}"),
        server_ca_file,
    }
}

impl TlsSetup {
    fn connect(&self, files: &ClientFiles) -> Result<Api, String> {
        Api::connect(&Target::Remote {
            endpoint: self.endpoint.clone(),
            tls: Some(files.clone()),
        })
    }

    /// Whether a client with these files gets a status answer. In TLS 1.3
    /// the client may finish its side of the handshake before the server
    /// rejects its certificate; depending on timing tonic then waits for an
    /// answer that never comes instead of failing, so no answer within
    /// 10 s counts as refused too (the server is alive: the tests first get
    /// an answer with a good certificate).
    fn status_with(&self, files: &ClientFiles) -> Result<pb::StatusResponse, String> {
        let api = self.connect(files)?;
        let node = api.node();
        api.call(async move {
            let mut node = node;
            match tokio::time::timeout(Duration::from_secs(10), node.status(pb::StatusRequest {}))
                .await
            {
                Ok(answer) => answer
                    .map(tonic::Response::into_inner)
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
                Err(_) => Err("no answer within 10 s".to_owned()),
            }
        })
    }
}

#[test]
fn tls_roles_decide_who_may_read_and_who_may_revoke() {
    if !kernel_available() {
        return;
    }
    let ca = Ca::new("vigil test clients");
    let t = tls_daemon(&ca, &ca);
    let reader = t
        .pki
        .client("reader", &ca, "siem-reader", vec![], &t.server_ca_file);
    let operator = t.pki.client(
        "operator",
        &ca,
        "responder",
        vec![rcgen::SanType::URI(
            "spiffe://test.vigil/ns/sec/sa/responder"
                .try_into()
                .unwrap(),
        )],
        &t.server_ca_file,
    );
    let stranger = t
        .pki
        .client("stranger", &ca, "stranger", vec![], &t.server_ca_file);

    // A reader reads: status, agents, the stream.
    let api = t.connect(&reader).unwrap();
    assert!(api.status().is_ok());
    let agents = api
        .call(api.governance().list_agents(pb::ListAgentsRequest {}))
        .unwrap()
        .into_inner();
    assert_eq!(agents.agents[0].name, "coder");
    let mut sub = api.subscribe(now()).unwrap();
    marker(&t.d, "s-tls", "tls-marker");
    sub.until("marker over TLS", is_marker("tls-marker"));
    // …and may not revoke.
    let denied = api
        .call(api.governance().revoke(pb::RevokeRequest {
            agent: "coder".into(),
            session: String::new(),
            reason: "reader tries".into(),
        }))
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("reader"), "{denied:?}");
    let start = api
        .call(api.governance().start_session(pb::StartSessionRequest {
            agent: "coder".into(),
            session: String::new(),
            pid: std::process::id(),
        }))
        .unwrap_err();
    assert_eq!(start.code(), tonic::Code::PermissionDenied);

    // An operator (mapped by its URI SAN) may, and is recorded by subject.
    let op = t.connect(&operator).unwrap();
    let revoked = op
        .call(op.governance().revoke(pb::RevokeRequest {
            agent: "coder".into(),
            session: String::new(),
            reason: "operator revokes".into(),
        }))
        .unwrap()
        .into_inner();
    let event = sub.through(revoked.sequence).pop().unwrap();
    let Some(pb::event::Payload::Revocation(r)) = &event.payload else {
        panic!("not a revocation: {event:?}")
    };
    assert!(r.by.starts_with("certificate CN=responder"), "{}", r.by);

    // A certificate of the right CA that no role names gets nothing.
    let e = t.status_with(&stranger).unwrap_err();
    assert!(
        e.starts_with("PermissionDenied") && e.contains("CN=stranger"),
        "{e}"
    );

    // The CLI speaks TLS too.
    let cli = |files: &ClientFiles, args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.extend([
            "--endpoint".into(),
            t.endpoint.clone(),
            "--cert".into(),
            files.cert.display().to_string(),
            "--key".into(),
            files.key.display().to_string(),
            "--ca".into(),
            files.ca.display().to_string(),
        ]);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        t.d.vigil(&all)
    };
    let out = cli(&reader, &["status"]);
    assert!(out.status.success(), "{out:?}");
    let out = cli(&reader, &["restore", "coder", "--reason", "reader tries"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PermissionDenied"),
        "{out:?}"
    );
    let out = cli(&operator, &["restore", "coder", "--reason", "done"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn no_certificate_or_one_from_another_ca_is_refused() {
    if !kernel_available() {
        return;
    }
    let ca = Ca::new("vigil test clients");
    let other = Ca::new("someone else");
    let t = tls_daemon(&ca, &ca);
    let good = t
        .pki
        .client("reader", &ca, "siem-reader", vec![], &t.server_ca_file);
    assert!(t.status_with(&good).is_ok());
    // Same name, wrong issuer.
    let forged = t
        .pki
        .client("forged", &other, "siem-reader", vec![], &t.server_ca_file);
    let e = t.status_with(&forged).unwrap_err();
    assert!(
        !e.starts_with("PermissionDenied"),
        "refused at the handshake, not by role: {e}"
    );
    // No client certificate at all: tonic's plain TLS client.
    let api = Api::connect(&Target::Remote {
        endpoint: t.endpoint.clone(),
        tls: None,
    });
    assert!(
        api.is_err(),
        "https without a client certificate is refused by the client side"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let no_cert = rt.block_on(async {
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
            tonic::transport::Certificate::from_pem(std::fs::read(&t.server_ca_file).unwrap()),
        );
        let channel = tonic::transport::Endpoint::from_shared(t.endpoint.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        // No answer at all counts as refused (see `status_with`).
        tokio::time::timeout(
            Duration::from_secs(10),
            pb::node_service_client::NodeServiceClient::new(channel).status(pb::StatusRequest {}),
        )
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
        .map_err(|s| s.to_string())
    });
    assert!(
        no_cert.is_err(),
        "a client without a certificate got an answer"
    );
    // Plain text to the TLS port gets nothing either.
    let plain = Api::connect(&Target::Remote {
        endpoint: t.endpoint.replace("https", "http"),
        tls: None,
    })
    .and_then(|api| api.status().map_err(|s| s.to_string()));
    assert!(plain.is_err());
    let log = t.d.log();
    assert!(
        log.contains("API TLS handshake with 127.0.0.1"),
        "refusals are logged:\n{log}"
    );
}

#[test]
fn certificates_reload_without_restart() {
    if !kernel_available() {
        return;
    }
    let ca1 = Ca::new("first CA");
    let ca2 = Ca::new("second CA");
    let t = tls_daemon(&ca1, &ca1);
    let old_client = t
        .pki
        .client("old", &ca1, "siem-reader", vec![], &t.server_ca_file);
    let ca2_file = t.pki.write("ca2.crt", &ca2.pem);
    let new_client = t.pki.client("new", &ca2, "siem-reader", vec![], &ca2_file);
    assert!(t.status_with(&old_client).is_ok());
    assert!(t.status_with(&new_client).is_err());

    // Rotate everything to the second CA: server certificate and client CA.
    t.pki.server(&ca2, &ca2);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while t.status_with(&new_client).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "new certificates not picked up:\n{}",
            t.d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        t.status_with(&old_client).is_err(),
        "the old CA is no longer trusted"
    );
    assert!(t.d.log().contains("API TLS certificates reloaded"));

    // A broken rotation keeps the working certificates.
    t.pki.write("server.crt", "not a certificate");
    std::thread::sleep(vigil::api::tls::RELOAD_POLL * 3);
    assert!(t.status_with(&new_client).is_ok());
    assert!(
        t.d.log()
            .contains("not reloaded, keeping the previous ones")
    );
}

#[test]
fn plain_tcp_is_served_on_loopback_when_insecure_and_only_reads() {
    if !kernel_available() {
        return;
    }
    let port = free_port();
    let d = Daemon::start(&format!(
        "{CODER_AGENT}\n[api]\nlisten = \"127.0.0.1:{port}\"\ninsecure = true\n"
    ));
    let api = Api::connect(&Target::Remote {
        endpoint: format!("http://127.0.0.1:{port}"),
        tls: None,
    })
    .unwrap();
    assert!(api.status().is_ok());
    let e = api
        .call(api.governance().revoke(pb::RevokeRequest {
            agent: "coder".into(),
            session: String::new(),
            reason: "x".into(),
        }))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    drop(d);
    // The config refuses plain TCP anywhere but loopback.
    let bad = tempfile::tempdir().unwrap();
    let file = bad.path().join("vigil.toml");
    std::fs::write(&file, "[api]\nlisten = \"0.0.0.0:7443\"\ninsecure = true\n").unwrap();
    let out = std::process::Command::new(vigil_tests::vigil_bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("api.insecure: plain TCP is only allowed on a loopback address"),
        "{out:?}"
    );
}
