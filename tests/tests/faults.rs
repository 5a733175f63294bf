//! Faults against a real daemon on the real kernel: a full disk under the
//! journal, a damaged journal file at start, `kill -9` in the middle of
//! reloads and commits, subscribers that stall, vanish or send huge
//! filters, and a ring-buffer flood. Each checks the promise that must
//! survive it: enforcement goes on in the kernel, nothing committed is lost,
//! what is lost is counted and reported, memory stays bounded.
//!
//! Memory bounds are generous on purpose (the figures measured are in
//! docs/reliability.md); they catch growth without limit, not noise.

// Paths are written into TOML with `{:?}` (a quoted, escaped string), and
// small helpers sit next to the steps that use them.
#![allow(clippy::unnecessary_debug_formatting, clippy::items_after_statements)]

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vigil_tests::kube::{count, free_port, scrape};
use vigil_tests::{
    CODER_AGENT, Daemon, Served, assert_contiguous, exec_has, kernel_available, pb, vigil_bin,
    workload_bin,
};

use pb::subscribe_request::Start;

const EPERM: &str = "err 1";
/// How long a test waits for the daemon to reach a state it must reach.
const WAIT: Duration = Duration::from_mins(1);

fn wl() -> String {
    workload_bin().to_str().unwrap().to_owned()
}

fn from(start: Start) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        start: Some(start),
        filter: None,
    }
}

fn marker(d: &Daemon, session: &str, marker: &str) {
    let out = d.exec("coder", session, &["/bin/echo", marker]);
    assert!(out.status.success(), "{out:?}\n{}", d.log());
}

/// Polls `done` until it holds, panicking with `what` after [`WAIT`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The daemon's resident set, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

fn metric(port: u16, series: &str) -> u64 {
    let text = scrape(([127, 0, 0, 1], port).into()).unwrap_or_else(|e| panic!("scrape: {e}"));
    count(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// A tmpfs of `size` mounted at `dir` for the life of the guard.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .unwrap_or_else(|e| panic!("mounting a tmpfs at {}: {e}", dir.display()));
        Self(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: the daemon may still hold the journal open.
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Writes `file` until the filesystem is full; the bytes written.
fn fill(file: &Path) -> u64 {
    let mut f = std::fs::File::create(file).unwrap();
    let chunk = vec![0x55u8; 16 * 1024];
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    // What is left is smaller than a chunk; take it too.
    let mut byte = [0u8; 1];
    while f.write(&byte).is_ok_and(|n| n == 1) {
        written += 1;
        byte[0] = byte[0].wrapping_add(1);
    }
    written
}

fn journal_loss(e: &pb::Event) -> Option<&pb::Loss> {
    match &e.payload {
        Some(pb::event::Payload::Loss(l)) if l.sensor == "journal" => Some(l),
        _ => None,
    }
}

#[test]
fn a_full_disk_stops_journaling_not_enforcement_and_journaling_resumes_with_the_loss_reported() {
    if !kernel_available() {
        return;
    }
    let port = free_port();
    let mut tmpfs = None;
    let mut d = Daemon::start_fn(
        |dir| {
            let jfs = dir.canonicalize().unwrap().join("jfs");
            tmpfs = Some(Tmpfs::mount(&jfs, "4m"));
            format!(
                "{CODER_AGENT}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n[journal]\npath = {:?}\n",
                jfs.join("journal.redb")
            )
        },
        "open_repeat_ms = 0",
    );
    let jfs = tmpfs.as_ref().unwrap().0.clone();
    let journal = jfs.join("journal.redb");
    let api = d.api();

    // An enforced session, revoked while the journal can still record it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut enforced = Served::start(&d, "coder", "s-enforced");
    d.vigil_ok(&[
        "revoke",
        "coder",
        "--session",
        "s-enforced",
        "--reason",
        "disk full test",
    ]);
    assert_eq!(
        enforced.ask(&format!("connect {addr}")).as_deref(),
        Some(EPERM)
    );
    marker(&d, "s-before", "before-full");
    let before = api.newest();
    assert!(before > 0);

    let filler = jfs.join("filler");
    let filled = fill(&filler);
    eprintln!("filled the 4 MiB tmpfs with {filled} bytes");
    // Events keep coming; the journal's next growth fails.
    let mut round = 0;
    wait_until("a commit refused by the full disk", || {
        round += 1;
        let out = d.exec(
            "coder",
            &format!("s-full-{round}"),
            &[&wl(), "flood-open", "/dev/null", "2000"],
        );
        assert!(out.status.success(), "{out:?}\n{}", d.log());
        metric(port, "vigil_journal_unjournaled_events_total") > 0
    });
    assert_eq!(metric(port, "vigil_journal_writable"), 0);
    assert!(d.alive(), "the daemon died of a full disk:\n{}", d.log());

    // Enforcement is the kernel's and goes on.
    assert_eq!(
        enforced.ask(&format!("connect {addr}")).as_deref(),
        Some(EPERM)
    );
    // The API still serves: status, and the history that was journaled.
    let status = api.status().unwrap().journal.unwrap();
    assert!(status.newest_sequence >= before);
    let mut history = api.subscribe(from(Start::Oldest(true))).unwrap();
    let replay = history.through(before);
    assert_contiguous(&replay, 1, replay.last().unwrap().sequence);
    // And the JSON output still gets what the journal could not take.
    marker(&d, "s-during", "during-full");
    d.wait_for("the marker exec while the disk is full", |e| {
        e["kind"] == "exec"
            && e["argv"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "during-full"))
    });
    let refused = metric(port, "vigil_journal_unjournaled_events_total");

    // Space returns: the next commit reports the loss, then journaling goes on.
    std::fs::remove_file(&filler).unwrap();
    let mut sub = api.subscribe(from(Start::AfterSequence(before))).unwrap();
    marker(&d, "s-after", "after-full");
    let after = sub.until("the marker after space returned", |e| {
        exec_has(e, "after-full")
    });
    let losses: Vec<&pb::Loss> = after.iter().filter_map(journal_loss).collect();
    let reported: u64 = losses.iter().map(|l| l.lost).sum();
    assert!(
        !losses.is_empty(),
        "no journal loss event in {} events",
        after.len()
    );
    let total = metric(port, "vigil_journal_unjournaled_events_total");
    assert!(
        reported >= refused && reported <= total,
        "{reported} reported, {refused}..{total} refused"
    );
    assert_eq!(losses.last().unwrap().total, reported);
    assert_eq!(metric(port, "vigil_journal_writable"), 1);
    eprintln!("{reported} events refused by the full disk were reported lost");

    // No corruption: one contiguous sequence, and the file checks clean.
    let newest = api.newest();
    let mut all = api.subscribe(from(Start::Oldest(true))).unwrap();
    let events = all.through(newest);
    assert_contiguous(&events, 1, newest);
    drop((all, sub, history, api));
    d.stop();
    let check = Command::new(vigil_bin())
        .args(["journal", "check"])
        .arg(&journal)
        .output()
        .unwrap();
    assert!(check.status.success(), "journal check: {check:?}");
    drop(tmpfs);
}

/// Runs `vigil run` on `config`, which must fail to start; its stderr.
fn failed_start(config: &Path) -> String {
    let mut child = Command::new(vigil_bin())
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon started on a damaged journal");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_damaged_journal_is_refused_by_name_and_repaired_by_the_cli_without_reusing_sequences() {
    if !kernel_available() {
        return;
    }
    let mut d = Daemon::start(CODER_AGENT);
    for i in 0..20 {
        marker(&d, &format!("s-dmg-{i}"), &format!("dmg-{i}"));
    }
    let newest = d.api().newest();
    d.stop();
    let journal = d
        .dir
        .path()
        .canonicalize()
        .unwrap()
        .join("state/journal.redb");
    let bytes = std::fs::read(&journal).unwrap();
    let journal_cmd = |what: &str| {
        Command::new(vigil_bin())
            .args(["journal", what])
            .arg(&journal)
            .output()
            .unwrap()
    };
    let refused_by_name = || {
        let err = failed_start(&d.config_path);
        assert!(err.contains(&journal.display().to_string()), "{err}");
        assert!(err.contains("vigil journal repair"), "{err}");
    };

    // Cut in half, as a copy interrupted: the newest tree pages are gone,
    // redb cannot recover it, and repair says so and leaves it in place.
    let cut = &bytes[..bytes.len() / 2];
    std::fs::write(&journal, cut).unwrap();
    refused_by_name();
    assert!(!journal_cmd("check").status.success());
    let repair = journal_cmd("repair");
    assert!(
        !repair.status.success(),
        "repaired a file cut in half: {repair:?}"
    );
    let said = String::from_utf8_lossy(&repair.stderr);
    assert!(said.contains(&journal.display().to_string()), "{said}");
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        cut,
        "the file was not left as it was"
    );
    eprintln!("repair of a journal cut in half: {said}");

    // A page of events overwritten (a bad sector): refused at start,
    // recovered around the damage by repair. Which pages hold events (and
    // not free space) depends on the run, so the first page from the middle
    // whose damage `check` sees is the one.
    let page = 4096;
    let damaged = (bytes.len() / 2 / page..bytes.len() / page)
        .map(|p| {
            let mut b = bytes.clone();
            b[p * page..(p + 1) * page].fill(0x5a);
            b
        })
        .find(|b| {
            std::fs::write(&journal, b).unwrap();
            !journal_cmd("check").status.success()
        })
        .expect("no page of the second half holds events");
    refused_by_name();
    let check = journal_cmd("check");
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(said.contains(&journal.display().to_string()), "{said}");

    let repair = journal_cmd("repair");
    let said = String::from_utf8_lossy(&repair.stdout).into_owned();
    assert!(repair.status.success(), "repair: {repair:?}");
    assert!(said.contains("kept as"), "{said}");
    let kept: Vec<PathBuf> = std::fs::read_dir(journal.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("journal.redb.corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), damaged);
    eprintln!("repair: {said}");

    d.spawn();
    let api = d.api();
    marker(&d, "s-dmg-after", "dmg-after");
    let mut all = api.subscribe(from(Start::Oldest(true))).unwrap();
    let events = all.until("the marker after the repair", |e| exec_has(e, "dmg-after"));
    // What was recovered keeps its sequence; nothing new reuses one.
    let recovered: Vec<u64> = events
        .iter()
        .map(|e| e.sequence)
        .filter(|&s| s <= newest)
        .collect();
    assert!(
        !recovered.is_empty(),
        "nothing recovered around one damaged page"
    );
    assert!(
        events.iter().any(|e| e.sequence > newest),
        "no event after the repair"
    );
    assert!(
        events.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "sequences out of order or reused"
    );
    eprintln!(
        "{} of {newest} events recovered from a journal with a page overwritten",
        recovered.len()
    );
}

#[test]
fn kill_9_during_reloads_and_commits_keeps_the_config_on_disk_and_every_committed_event() {
    if !kernel_available() {
        return;
    }
    let agent = |name: &str| {
        format!(
            "\n[[agent]]\nname = \"{name}\"\n  [agent.match]\n  sessions = true\n  [agent.scope]\n  tools = [\"/**\"]\n"
        )
    };
    let mut d = Daemon::start_with(CODER_AGENT, "open_repeat_ms = 0");
    let api = d.api();
    // A client that has read up to a cursor before the crash.
    let mut client = api.subscribe(from(Start::Oldest(true))).unwrap();
    marker(&d, "s-k9-0", "k9-cursor");
    let read = client.until("the cursor marker", |e| exec_has(e, "k9-cursor"));
    let cursor = read.last().unwrap().sequence;
    drop(client);

    // Load: a flood, and reloads one after the other.
    let flood = Command::new(vigil_bin())
        .args([
            "exec",
            "--agent",
            "coder",
            "--session",
            "s-k9-flood",
            "--",
            &wl(),
        ])
        .args(["flood-open", "/dev/null", "200000"])
        .env("VIGIL_SOCKET", &d.socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut last_written = String::new();
    for i in 0..40 {
        last_written = d.full_config(&format!("{CODER_AGENT}{}", agent(&format!("reloaded-{i}"))));
        // As editors and config management do: a new file renamed over the old.
        let tmp = d.config_path.with_extension("toml.new");
        std::fs::write(&tmp, &last_written).unwrap();
        std::fs::rename(&tmp, &d.config_path).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = api.newest();
    d.kill9();
    let mut flood = flood;
    let _ = flood.kill();
    let _ = flood.wait();
    drop(api);

    d.spawn();
    let api = d.api();
    // The config is the last one written, whole.
    let agents = d.vigil_ok(&["agents"]);
    assert!(agents.contains("reloaded-39"), "{agents}");
    assert_eq!(
        std::fs::read_to_string(&d.config_path).unwrap(),
        last_written
    );
    // Every event committed before the crash, from the client's cursor on.
    let status = api.status().unwrap().journal.unwrap();
    assert!(
        status.newest_sequence >= seen,
        "newest {} < {seen} seen before the crash",
        status.newest_sequence
    );
    marker(&d, "s-k9-after", "k9-after");
    let after = api.newest();
    let mut resumed = api.subscribe(from(Start::AfterSequence(cursor))).unwrap();
    let events = resumed.through(after);
    assert_contiguous(&events, cursor + 1, after);
    eprintln!(
        "{} events from the cursor {cursor} through {after} after kill -9 under load",
        events.len()
    );
}

#[test]
fn stalled_vanishing_and_huge_filter_subscribers_leave_memory_bounded_and_others_served() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start_with(CODER_AGENT, "open_repeat_ms = 0");
    let pid = d.pid().unwrap();
    let api = d.api();
    marker(&d, "s-mem-0", "mem-warm");
    let baseline = rss_kib(pid);

    // A filter over the limits: refused, the field named.
    let too_many = pb::SubscribeRequest {
        start: None,
        filter: Some(pb::EventFilter {
            agents: (0..100_000).map(|i| format!("agent-{i}")).collect(),
            ..pb::EventFilter::default()
        }),
    };
    let e = api
        .subscribe(too_many)
        .err()
        .expect("a filter of 100,000 agents");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("filter.agents"), "{e:?}");
    let too_long = pb::SubscribeRequest {
        start: None,
        filter: Some(pb::EventFilter {
            sessions: vec!["s".repeat(3 * 1024 * 1024)],
            ..pb::EventFilter::default()
        }),
    };
    let e = api.subscribe(too_long).err().expect("a 3 MiB session name");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("filter.sessions[0]"), "{e:?}");
    // Past the transport's limit the request is not even decoded.
    let huge = pb::SubscribeRequest {
        start: None,
        filter: Some(pb::EventFilter {
            agents: vec!["a".repeat(8 * 1024 * 1024)],
            ..pb::EventFilter::default()
        }),
    };
    let e = api.subscribe(huge).err().expect("an 8 MiB request");
    assert_ne!(e.code(), tonic::Code::Ok);

    // 1,000 subscribers that connect and vanish, each on its own connection.
    let target = vigil::api::client::Target::Unix(d.socket.clone());
    for _ in 0..1000 {
        api.call(async {
            let channel = vigil::api::client::connect(&target).await.unwrap();
            let mut client = pb::event_service_client::EventServiceClient::new(channel);
            let stream = client
                .subscribe(from(Start::Oldest(true)))
                .await
                .unwrap()
                .into_inner();
            drop(stream);
        });
    }
    wait_until("the vanished subscribers to be dropped", || {
        api.status().unwrap().subscribers == 0
    });
    let after_churn = rss_kib(pid);

    // One subscriber that never reads, from the oldest event, and one that
    // reads everything, through a flood.
    let stalled = api.subscribe(from(Start::Oldest(true))).unwrap();
    let mut reader = api.subscribe(from(Start::Now(true))).unwrap();
    let start = api.newest();
    let out = d.exec(
        "coder",
        "s-mem-flood",
        &[&wl(), "flood-open", "/dev/null", "100000"],
    );
    assert!(out.status.success(), "{out:?}");
    marker(&d, "s-mem-end", "mem-end");
    let read = reader.until("the end marker", |e| exec_has(e, "mem-end"));
    assert_contiguous(&read, start + 1, read.last().unwrap().sequence);
    let after_flood = rss_kib(pid);
    eprintln!(
        "daemon RSS: {baseline} KiB at start, {after_churn} KiB after 1,000 vanished subscribers, \
         {after_flood} KiB after a 100,000-event flood with a stalled subscriber"
    );
    assert!(
        d.log().is_empty() || !d.log().contains("panicked"),
        "{}",
        d.log()
    );
    // Generous: the bound is that memory does not follow the subscribers'
    // number or the stalled one's backlog.
    assert!(
        after_churn < baseline + 64 * 1024,
        "{after_churn} KiB after churn, {baseline} at start"
    );
    assert!(
        after_flood < baseline + 192 * 1024,
        "{after_flood} KiB after the flood, {baseline} at start"
    );
    drop(stalled);
}

#[test]
fn a_ring_buffer_flood_is_counted_per_sensor_while_the_kernel_keeps_denying() {
    if !kernel_available() {
        return;
    }
    // Room for about two thousand open records.
    let d = Daemon::start_with(
        CODER_AGENT,
        "ring_buffer_bytes = 1048576\nopen_repeat_ms = 0",
    );
    let api = d.api();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut enforced = Served::start(&d, "coder", "s-fl-enforced");
    let mut flood = Served::start(&d, "coder", "s-fl-flood");
    d.vigil_ok(&[
        "revoke",
        "coder",
        "--session",
        "s-fl-enforced",
        "--reason",
        "flood test",
    ]);
    assert_eq!(
        enforced.ask(&format!("connect {addr}")).as_deref(),
        Some(EPERM)
    );
    d.settle();
    let lost_before: u64 = api.status().unwrap().sensors.iter().map(|s| s.lost).sum();

    // The reader stopped, so the ring fills and stays full.
    let pid = nix::unistd::Pid::from_raw(d.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let prefix = d.dir.path().join("missing-");
    let answer = flood.ask(&format!("open-many {} 20000", prefix.display()));
    // The ring is full: the kernel decides anyway.
    let denied = enforced.ask(&format!("connect {addr}"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(answer.as_deref(), Some("ok 0"));
    assert_eq!(denied.as_deref(), Some(EPERM));

    d.wait_for("the node's file loss", |e| {
        e["kind"] == "loss" && e["sensor"] == "file" && e["identity"]["session"].is_null()
    });
    let sensors = api.status().unwrap().sensors;
    let file = sensors.iter().find(|s| s.name == "file").unwrap();
    let lost: u64 = sensors.iter().map(|s| s.lost).sum();
    assert!(file.lost > 10_000, "{sensors:?}");
    assert!(lost > lost_before);
    eprintln!(
        "flood: {} file records lost in the kernel, counted; the revoked connect still got EPERM",
        file.lost
    );
}
