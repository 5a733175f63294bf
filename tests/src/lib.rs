//! Harness for Vigil's integration tests: starts a real daemon on a private
//! socket, cgroup parent and output file, runs real workloads, and reads the
//! events it reports. The daemon itself is `vigil_harness`'s, which the demo
//! and the benchmarks share; this crate adds what only the tests need and
//! fails (panics) where they fail.
//!
//! The tests need root and a BPF-capable kernel. Without root they skip with
//! a message, unless `VIGIL_REQUIRE_KERNEL` is set (as `cargo xtask test`
//! does in CI), in which case they fail: a skipped kernel test must never
//! pass silently there.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;
use vigil_harness::{Events, Layout, cgroup, every, names};

pub use vigil_harness::{cgroup::v2_mount as cgroup2_mount, vigil_bin, workload_bin};

/// True when kernel tests can run; false (after saying why) when they are
/// to be skipped. Panics when they cannot run but are required.
#[must_use]
pub fn kernel_available() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("VIGIL_REQUIRE_KERNEL").is_none(),
        "kernel tests are required (VIGIL_REQUIRE_KERNEL is set) but this is not root"
    );
    eprintln!("skipping: kernel tests need root");
    false
}

/// The prefix of test daemons' cgroup parents and pin directories.
const NAME_PREFIX: &str = "vigil-test";

/// How long a test waits for an expected event in the events file.
const EVENT_WAIT: Duration = Duration::from_secs(15);

static SETTLES: AtomicU32 = AtomicU32::new(0);

/// A running daemon with its own socket, cgroup parent and event file.
pub struct Daemon {
    // Declared before `dir`, so that the daemon is stopped before its
    // directory is removed.
    inner: vigil_harness::Daemon,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub events_path: PathBuf,
    pub config_path: PathBuf,
    pub cgroup_parent: String,
    extra_daemon_lines: String,
}

/// The default agent of test configs: sessions allowed, a loose scope.
pub const CODER_AGENT: &str = vigil_harness::permissive_agent!("coder", "tests@example.com");

impl Daemon {
    /// Starts a daemon whose config is the test's private `[daemon]` and
    /// `[output]` sections plus `extra` (agents, data classes, …).
    pub fn start(extra: &str) -> Self {
        Self::start_with(extra, "")
    }

    /// Like [`Daemon::start`], with extra lines in the `[daemon]` section.
    pub fn start_with(extra: &str, daemon_extra: &str) -> Self {
        Self::start_fn(|_| extra.to_owned(), daemon_extra)
    }

    /// Starts a daemon whose extra config is made from its private directory
    /// (for configs that name paths inside it).
    pub fn start_fn(extra: impl FnOnce(&Path) -> String, daemon_extra: &str) -> Self {
        static LEFTOVERS: std::sync::Once = std::sync::Once::new();
        LEFTOVERS.call_once(remove_leftovers);
        let (dir, layout) = Layout::temp("vigil-test-", &names::unique(NAME_PREFIX))
            .unwrap_or_else(|e| panic!("{e:#}"));
        let extra = extra(dir.path());
        let mut d = Self {
            socket: layout.socket.clone(),
            events_path: layout.events.clone(),
            config_path: layout.config.clone(),
            cgroup_parent: layout.cgroup_parent.clone(),
            inner: vigil_harness::Daemon::new(&vigil_bin(), layout),
            dir,
            extra_daemon_lines: daemon_extra.to_owned(),
        };
        d.inner
            .write_config(&d.full_config(&extra))
            .unwrap_or_else(|e| panic!("{e:#}"));
        d.spawn();
        d
    }

    /// The whole config file for `extra` (agents, data classes, …) with this
    /// daemon's private `[daemon]` and `[output]` sections.
    #[must_use]
    pub fn full_config(&self, extra: &str) -> String {
        self.inner
            .layout()
            .config_text(&self.extra_daemon_lines, Events::File, extra)
    }

    /// Starts (or restarts) the daemon process on the same config and waits
    /// until it answers.
    pub fn spawn(&mut self) {
        self.inner.spawn().unwrap_or_else(|e| panic!("{e:#}"));
        if let Err(e) = self.inner.wait_ready(
            vigil_harness::START_TIMEOUT,
            every(Duration::from_millis(50)),
        ) {
            panic!("{e:#}:\n{}", self.log());
        }
    }

    /// The daemon's stderr so far.
    #[must_use]
    pub fn log(&self) -> String {
        self.inner.log()
    }

    /// Runs a `vigil` client command against this daemon.
    #[must_use]
    pub fn vigil(&self, args: &[&str]) -> Output {
        self.inner.vigil(args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Runs a client command that must succeed; its stdout. A failure
    /// panics with the command's stderr and the daemon's log.
    pub fn vigil_ok(&self, args: &[&str]) -> String {
        let out = self.vigil(args);
        assert!(
            out.status.success(),
            "vigil {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `cmd` as a session of `agent` and waits for it.
    #[must_use]
    pub fn exec(&self, agent: &str, session: &str, cmd: &[&str]) -> Output {
        self.inner
            .exec(agent, session)
            .args(cmd)
            .output()
            .expect("run vigil client")
    }

    /// Every event written so far.
    #[must_use]
    pub fn events(&self) -> Vec<Value> {
        self.inner.events().unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Waits until some event satisfies `pred` and returns it.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let found = self
            .inner
            .wait_for_event(EVENT_WAIT, every(Duration::from_millis(50)), pred)
            .unwrap_or_else(|e| panic!("{e:#}"));
        found.unwrap_or_else(|| {
            panic!(
                "no event for {what} after {EVENT_WAIT:?}; events:\n{}\ndaemon log:\n{}",
                self.dump(),
                self.log()
            )
        })
    }

    /// Waits for the first `kind` anomaly (`unapproved_tool`, …) of
    /// `session` and returns it.
    pub fn anomaly(&self, session: &str, kind: &str) -> Value {
        self.wait_for(&format!("a {kind} anomaly of {session}"), |e| {
            e["kind"] == "anomaly" && e["identity"]["session"] == session && e["anomaly"] == kind
        })
    }

    /// Whether `session` has had a `kind` anomaly so far (call
    /// [`Daemon::settle`] first to include all the kernel has delivered).
    #[must_use]
    pub fn has_anomaly(&self, session: &str, kind: &str) -> bool {
        of(&self.events(), "anomaly", session)
            .iter()
            .any(|a| a["anomaly"] == kind)
    }

    /// Lets the daemon drain what the kernel has delivered: waits for a
    /// marker exec in a fresh session to show up.
    pub fn settle(&self) {
        let n = SETTLES.fetch_add(1, Ordering::Relaxed);
        let session = format!("settle-{n}");
        let marker = format!("settle-marker-{n}");
        let out = self.exec("coder", &session, &["/bin/true", &marker]);
        assert!(out.status.success(), "settle exec failed: {out:?}");
        self.wait_for("settle marker", |e| {
            e["kind"] == "exec"
                && e["argv"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == marker.as_str()))
        });
    }

    /// All events, one JSON per line, for failure messages.
    #[must_use]
    pub fn dump(&self) -> String {
        self.events()
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Sends SIGKILL to the daemon (crash simulation) and waits for it.
    pub fn kill9(&mut self) {
        self.inner.kill();
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        let _ = self.inner.terminate(Duration::from_secs(10));
    }

    /// The daemon's process id, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.inner.pid()
    }

    /// True while the daemon process runs.
    pub fn alive(&mut self) -> bool {
        self.inner.alive()
    }
}

/// Removes the pins and cgroups of test daemons whose test process is gone
/// (a run that was killed never dropped its `Daemon`s). Pinned programs
/// outlive their daemon by design, so they would otherwise run on every
/// syscall of the machine until the next reboot, and `cargo xtask bench`
/// refuses to measure while they do.
fn remove_leftovers() {
    let dead = |name: &str| {
        names::is_leftover(name, NAME_PREFIX, |pid| {
            Path::new(&format!("/proc/{pid}")).exists()
        })
    };
    let entries = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let name_of = |p: &Path| p.file_name().and_then(|n| n.to_str()).map(str::to_owned);
    for pins in entries(Path::new("/sys/fs/bpf")) {
        if name_of(&pins).is_some_and(|n| dead(&n)) {
            let _ = std::fs::remove_dir_all(&pins);
        }
    }
    if let Some(mount) = cgroup2_mount() {
        for parent in entries(&mount) {
            if name_of(&parent).is_some_and(|n| dead(&n)) {
                let _ = cgroup::kill(&parent);
                let _ = cgroup::remove(&parent);
            }
        }
    }
}

/// Events of one kind from one session.
#[must_use]
pub fn of(events: &[Value], kind: &str, session: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["kind"] == kind && e["identity"]["session"] == session)
        .cloned()
        .collect()
}

/// A one-shot DNS responder on `127.0.0.1:53` answering every A query with
/// `answer` (TTL 60), as the agent's resolver would see it. Runs until the
/// returned guard is dropped.
pub struct DnsServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    #[must_use]
    pub fn start(answer: std::net::Ipv4Addr) -> Self {
        Self::on("127.0.0.1:53", answer)
    }

    /// The same server bound to `addr`, so tests can run side by side.
    #[must_use]
    pub fn on(addr: &str, answer: std::net::Ipv4Addr) -> Self {
        let sock = std::net::UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let mut r = buf[..n].to_vec();
                r[2] = 0x81;
                r[3] = 0x80;
                r[6] = 0;
                r[7] = 1;
                r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                r.extend_from_slice(&answer.octets());
                let _ = sock.send_to(&r, peer);
            }
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---- gRPC clients of the daemon under test ---------------------------------

pub use vigil::api::pb;

/// How long a test waits for an expected event on a stream.
pub const STREAM_WAIT: Duration = Duration::from_secs(30);

/// A client of a daemon's public API. It owns a runtime, so tests stay
/// synchronous and the connection makes progress while they do other work.
pub struct Api {
    pub rt: tokio::runtime::Runtime,
    pub channel: tonic::transport::Channel,
}

impl Api {
    /// Connects to `target`, or says why it could not.
    pub fn connect(target: &vigil::api::client::Target) -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("client runtime");
        let channel = rt
            .block_on(vigil::api::client::connect(target))
            .map_err(|e| e.to_string())?;
        Ok(Self { rt, channel })
    }

    #[must_use]
    pub fn events(
        &self,
    ) -> pb::event_service_client::EventServiceClient<tonic::transport::Channel> {
        pb::event_service_client::EventServiceClient::new(self.channel.clone())
    }

    #[must_use]
    pub fn governance(
        &self,
    ) -> pb::governance_service_client::GovernanceServiceClient<tonic::transport::Channel> {
        pb::governance_service_client::GovernanceServiceClient::new(self.channel.clone())
    }

    #[must_use]
    pub fn node(&self) -> pb::node_service_client::NodeServiceClient<tonic::transport::Channel> {
        pb::node_service_client::NodeServiceClient::new(self.channel.clone())
    }

    /// Runs a future on the client's runtime.
    pub fn call<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn status(&self) -> Result<pb::StatusResponse, tonic::Status> {
        self.call(self.node().status(pb::StatusRequest {}))
            .map(tonic::Response::into_inner)
    }

    /// The newest journaled sequence.
    #[must_use]
    pub fn newest(&self) -> u64 {
        self.status()
            .expect("status")
            .journal
            .expect("journal status")
            .newest_sequence
    }

    pub fn subscribe(&self, req: pb::SubscribeRequest) -> Result<Stream, tonic::Status> {
        let inner = self.call(self.events().subscribe(req))?.into_inner();
        Ok(Stream {
            inner,
            rt: self.rt.handle().clone(),
        })
    }
}

impl Daemon {
    /// A client on the daemon's local socket.
    #[must_use]
    pub fn api(&self) -> Api {
        Api::connect(&vigil::api::client::Target::Unix(self.socket.clone()))
            .unwrap_or_else(|e| panic!("connecting to the test daemon: {e}\n{}", self.log()))
    }
}

/// A subscription's stream of events.
pub struct Stream {
    pub inner: tonic::Streaming<pb::SubscribeResponse>,
    rt: tokio::runtime::Handle,
}

impl Stream {
    /// The next event, `None` when none came within `wait`; panics when the
    /// stream fails or ends.
    pub fn next_within(&mut self, wait: Duration) -> Option<pb::Event> {
        let inner = &mut self.inner;
        // The timer must be made inside the runtime.
        match self
            .rt
            .block_on(async { tokio::time::timeout(wait, inner.message()).await })
        {
            Err(_) => None,
            Ok(Ok(Some(resp))) => Some(resp.event.expect("a response carries an event")),
            Ok(Ok(None)) => panic!("the stream ended"),
            Ok(Err(status)) => panic!("the stream failed: {status:?}"),
        }
    }

    /// Reads until an event satisfies `done` (included in the result);
    /// panics after [`STREAM_WAIT`] without one.
    pub fn until(&mut self, what: &str, done: impl Fn(&pb::Event) -> bool) -> Vec<pb::Event> {
        let deadline = Instant::now() + STREAM_WAIT;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(e) = self.next_within(left) else {
                panic!(
                    "no event for {what} within {STREAM_WAIT:?}; received {} events, last {:?}",
                    out.len(),
                    out.last()
                );
            };
            let stop = done(&e);
            out.push(e);
            if stop {
                return out;
            }
        }
    }

    /// Reads until the event with sequence `seq` (or a later one) arrives.
    pub fn through(&mut self, seq: u64) -> Vec<pb::Event> {
        self.until(&format!("sequence {seq}"), |e| e.sequence >= seq)
    }

    /// Everything that arrives until nothing has for `quiet`.
    pub fn drain_quiet(&mut self, quiet: Duration) -> Vec<pb::Event> {
        let mut out = Vec::new();
        while let Some(e) = self.next_within(quiet) {
            out.push(e);
        }
        out
    }
}

/// The payload kind of a wire event (`exec`, `file_open`, `gap`, …).
#[must_use]
pub fn kind(e: &pb::Event) -> String {
    e.payload.as_ref().map_or_else(
        || "none".to_owned(),
        |p| vigil::wire::kind_name(vigil::wire::kind_of(p)),
    )
}

/// Whether a wire exec event's argv contains `needle`.
#[must_use]
pub fn exec_has(e: &pb::Event, needle: &str) -> bool {
    matches!(&e.payload, Some(pb::event::Payload::Exec(x)) if x.argv.iter().any(|a| a == needle))
}

/// Panics unless `events` are exactly the sequences `first..=last`, in order.
pub fn assert_contiguous(events: &[pb::Event], first: u64, last: u64) {
    let got: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    let want: Vec<u64> = (first..=last).collect();
    if got != want {
        let missing: Vec<u64> = want
            .iter()
            .filter(|s| !got.contains(s))
            .copied()
            .take(20)
            .collect();
        panic!(
            "expected sequences {first}..={last} exactly once in order; got {} events ({:?} .. {:?}), missing (first 20) {missing:?}, gaps {:?}",
            got.len(),
            got.first(),
            got.last(),
            events
                .iter()
                .filter(|e| kind(e) == "gap")
                .collect::<Vec<_>>()
        );
    }
}

/// A `vigil-workload serve` process in an agent session: the test sends
/// it actions one at a time and reads each answer (`ok`, `err ERRNO`,
/// `exit N`, `signal N`).
pub struct Served(vigil_harness::Served);

impl Served {
    /// Starts the server as session `session` of `agent` and waits for it.
    pub fn start(d: &Daemon, agent: &str, session: &str) -> Self {
        let served = vigil_harness::Served::start(
            &d.inner,
            &workload_bin(),
            agent,
            session,
            Stdio::inherit(),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        Self(served)
    }

    /// Sends one action; `None` when the process died instead of answering.
    pub fn ask(&mut self, action: &str) -> Option<String> {
        self.0.ask(action).ok().flatten()
    }

    /// Waits for the process and returns the signal that ended it, if any.
    pub fn wait_signal(&mut self) -> Option<i32> {
        self.0.wait_signal().ok().flatten()
    }
}

// ---- OCSF validation with the official schema ------------------------------

/// The `PyPI` packages the OCSF validator runs on, pinned: `ocsf-json-schema`
/// ships the official schema exports (1.0 to 1.8) and turns a class into a
/// JSON Schema; `jsonschema` checks records against it.
pub const OCSF_VALIDATOR_PACKAGES: &[&str] = &["ocsf-json-schema==1.2.0", "jsonschema==4.26.0"];

/// The Python of a virtual environment with [`OCSF_VALIDATOR_PACKAGES`],
/// made under the target directory on first use (this needs `python3` and
/// `PyPI`). Never skipped: a machine without them fails the OCSF tests.
#[must_use]
pub fn ocsf_python() -> PathBuf {
    static READY: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut ready = READY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = ready.as_ref() {
        return p.clone();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let venv = target.join("ocsf-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("vigil-packages");
    let wanted = OCSF_VALIDATOR_PACKAGES.join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        let run = |cmd: &mut Command| {
            let out = cmd
                .output()
                .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
            assert!(
                out.status.success(),
                "{cmd:?} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(OCSF_VALIDATOR_PACKAGES));
        std::fs::write(&stamp, &wanted).expect("write the venv stamp");
    }
    *ready = Some(python.clone());
    python
}

/// Runs the OCSF validator (`tests/ocsf/validate.py`) over a file of OCSF
/// JSON lines; `expect` are Vigil kinds that must each appear. Returns the
/// validator's verdict: success, and its report.
#[must_use]
pub fn ocsf_validate(path: &Path, expect: &[&str]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ocsf/validate.py");
    let out = Command::new(ocsf_python())
        .arg(script)
        .arg(path)
        .arg(format!("--expect={}", expect.join(",")))
        .output()
        .expect("run the OCSF validator");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

// ---- a simulated Kubernetes node and metrics scraping ----------------------

pub mod kube;
pub mod pki;
pub mod python;
