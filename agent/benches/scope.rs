//! Scope evaluation throughput on one core: 100 agents with about 50 rules
//! each, over a mix of events shaped like an agent's real activity (mostly
//! library and workspace opens, forks and exits, connects to its services,
//! a few execs, and about 2% violations).
//!
//! Prints `BENCH scope.evaluations <N> evaluations/s >=2000000`: the median
//! of several measurement windows (details on stderr).

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use vigil::config::Config;
use vigil::event::{
    Access, Connect, Event, Exec, Exit, FileInode, FileOpen, Fork, Identity, Payload, Process,
    Protocol,
};
use vigil::scope::{AgentId, DnsCache, Scope};
use vigil_harness::stats::{Rng, rates};

const AGENTS: usize = 100;
const EVENTS: usize = 20_000;
const WARM_UP: Duration = Duration::from_millis(300);
const WINDOW: Duration = Duration::from_millis(400);
const WINDOWS: usize = 9;
const TARGET: f64 = 2_000_000.0;

/// About 50 rules per agent: 1 cgroup glob, 20 systems, 15 tools, 3 data
/// classes (8 globs), 2 identities (2 files/endpoints), plus shared classes.
fn config() -> String {
    let mut s = String::from("[scope]\naggregate_window_seconds = 10\n\n");
    for i in 0..AGENTS {
        let _ = write!(
            s,
            r#"
[[agent]]
name = "agent-{i}"
owner = "team-{i}@example.com"
on_violation = "alert"
  [agent.match]
  sessions = true
  cgroups = ["/kubepods.slice/**/cri-containerd-agent{i}-*.scope"]
  [agent.scope]
  systems = [
    "udp://127.0.0.53:53", "10.{i}.0.0/16:443", "10.{i}.1.0/24:8000-8100",
    "172.16.{i}.1:5432", "172.16.{i}.2:5432", "172.16.{i}.3:6379", "172.16.{i}.4:9092",
    "192.168.{i}.0/24", "127.0.0.1:{p1}", "[::1]:{p2}", "[fd00:{i:x}::/48]:443",
    "[2001:db8:{i:x}::1]:8443", "tcp://100.64.{i}.0/24:22",
    "api{i}.example.com:443", "git{i}.example.com:22", "*.svc{i}.example:443",
    "models.example.com:443", "s3.example.com:443", "registry.example.com:443",
    "udp://10.96.0.10:53",
  ]
  tools = [
    "/usr/bin/git", "/usr/lib/git-core/*", "/usr/bin/python3*", "/usr/local/bin/tool{i}-*",
    "/opt/agent{i}/bin/*", "/bin/sh", "/bin/bash", "/usr/bin/env", "/usr/bin/node",
    "/usr/bin/ls", "/usr/bin/cat", "/usr/bin/grep", "/usr/bin/sed", "/usr/bin/find",
    "/usr/bin/curl",
  ]
  data = ["ws-{i}", "scratch", "models"]
  identities = ["tok-{i}", "db-{i}"]

[data.ws-{i}]
read = ["/srv/ws/{i}/**", "/mnt/shared/{i}/**", "/etc/agent-{i}/*.conf"]
write = ["/srv/ws/{i}/**", "/tmp/agent-{i}/**", "/var/log/agent-{i}.log"]

[identity.tok-{i}]
files = ["/var/run/secrets/agent-{i}/token"]

[identity.db-{i}]
endpoints = ["db{i}.internal.example:5432"]
"#,
            p1 = 8000 + i,
            p2 = 9000 + i,
        );
    }
    s.push_str(
        r#"
[data.scratch]
read = ["/tmp/**"]
write = ["/tmp/**"]

[data.models]
read = ["/models/**"]

[data.hr]
read = ["/data/hr/**"]

[data.finance]
read = ["/data/finance/**", "/srv/finance/**"]
"#,
    );
    s
}

fn event(agent: usize, payload: Payload) -> Event {
    Event {
        seq: 0,
        time: std::time::SystemTime::UNIX_EPOCH,
        kernel_ts_ns: 0,
        identity: Identity {
            agent: Some(format!("agent-{agent}")),
            session: Some("s".into()),
            ..Identity::default()
        },
        process: Some(Process {
            pid: 1000 + agent as u32,
            tid: 1000 + agent as u32,
            comm: "python3".into(),
            ..Process::default()
        }),
        payload,
    }
}

fn open(path: String, access: Access) -> Payload {
    // Every open that succeeds carries its inode; the scope looks it up.
    let inode = Some(FileInode {
        dev: 2049,
        ino: 100_000 + path.len() as u64,
        nlink: 1,
    });
    Payload::FileOpen(FileOpen {
        inode,
        path,
        raw_path: None,
        flags: 0,
        access,
        syscall: "openat".into(),
        fd: Some(3),
        error: None,
        path_truncated: false,
        blocked: false,
        repeats: 0,
        repeat_summary: false,
    })
}

fn connect(protocol: Protocol, address: &str, port: u16, op: &str) -> Payload {
    Payload::Connect(Connect {
        protocol,
        address: address.parse().unwrap(),
        port,
        op: op.into(),
        blocked: false,
    })
}

fn exec(path: &str) -> Payload {
    Payload::Exec(Exec {
        filename: path.into(),
        argv: vec![path.into()],
        argv_truncated: false,
        blocked: false,
        from_memory: false,
        inode: None,
    })
}

fn workload(rng: &mut Rng) -> Vec<(usize, Event)> {
    const LIBS: &[&str] = &[
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/python3.12/os.py",
        "/usr/lib/python3.12/json/__init__.py",
        "/etc/ld.so.cache",
        "/etc/resolv.conf",
        "/usr/share/zoneinfo/UTC",
        "/proc/self/status",
    ];
    (0..EVENTS)
        .map(|_| {
            let i = rng.below(AGENTS);
            let n = rng.below(1000);
            let roll = rng.below(100);
            let payload = match roll {
                0..=21 => open(rng.pick(LIBS).to_owned(), Access::Read),
                22..=33 => open(format!("/srv/ws/{i}/src/module{n}.py"), Access::Read),
                34..=35 => open(format!("/models/m{}/weights.bin", n % 4), Access::Read),
                36..=39 => open(format!("/srv/ws/{i}/out/{n}.txt"), Access::Write),
                40..=41 => open(format!("/tmp/agent-{i}/cache-{n}"), Access::ReadWrite),
                42..=43 => open("/dev/null".to_owned(), Access::Write),
                44 => open(format!("/var/run/secrets/agent-{i}/token"), Access::Read),
                45..=51 => connect(
                    Protocol::Tcp,
                    &format!("10.{i}.3.{}", n % 250),
                    443,
                    "connect",
                ),
                52..=55 => connect(
                    Protocol::Tcp,
                    &format!("172.16.{i}.{}", 1 + n % 2),
                    5432,
                    "connect",
                ),
                56..=59 => connect(Protocol::Udp, "127.0.0.53", 53, "sendmsg"),
                60..=62 => connect(Protocol::Tcp, &format!("203.0.113.{i}"), 443, "connect"),
                63 => connect(Protocol::Tcp, &format!("fd00:{i:x}::{n:x}"), 443, "connect"),
                64..=65 => connect(Protocol::Tcp, "198.51.100.1", 443, "connect"),
                66..=72 => exec(rng.pick(&[
                    "/usr/bin/git",
                    "/usr/bin/python3.12",
                    "/usr/lib/git-core/git-remote-https",
                    "/bin/sh",
                    "/usr/bin/grep",
                ])),
                73..=85 => Payload::Fork(Fork {
                    child_pid: 5000 + n as u32,
                }),
                86..=97 => Payload::Exit(Exit {
                    code: Some(0),
                    signal: None,
                }),
                // About 2% violations, one of each kind.
                98 => match n % 4 {
                    0 => connect(Protocol::Udp, "8.8.8.8", 53, "sendmsg"),
                    1 => exec("/usr/bin/vigil-bench-nc"),
                    2 => open(format!("/data/hr/salaries-{}.csv", n % 10), Access::Read),
                    _ => open("/root/.aws/credentials".to_owned(), Access::Read),
                },
                _ => open(format!("/etc/cron.d/job{}", n % 10), Access::Write),
            };
            (i, event(i, payload))
        })
        .collect()
}

fn main() {
    let built = Instant::now();
    let config = Config::from_toml_str(&config(), "bench.toml").expect("bench config");
    let scope = Scope::compile(&config).expect("bench scope");
    let compile = built.elapsed();
    let ids: Vec<AgentId> = (0..AGENTS)
        .map(|i| scope.agent_id(&format!("agent-{i}")).unwrap())
        .collect();
    let rules: usize = scope
        .agents()
        .map(|a| {
            a.cgroups.len()
                + a.scope.systems.len()
                + a.scope.tools.len()
                + a.scope.data.len()
                + a.scope.identities.len()
        })
        .sum::<usize>()
        + config
            .data
            .values()
            .map(|c| c.read.len() + c.write.len())
            .sum::<usize>()
        + config
            .identities
            .values()
            .map(|i| i.files.len() + i.endpoints.len())
            .sum::<usize>();

    let dns = DnsCache::new();
    let now = Instant::now();
    for i in 0..AGENTS {
        let ip: IpAddr = format!("203.0.113.{i}").parse().unwrap();
        dns.record(
            &format!("agent-{i}"),
            &format!("api{i}.example.com"),
            &[ip],
            3600,
            now,
        );
    }
    dns.record_resolved(
        "models.example.com",
        &["198.51.100.1".parse().unwrap()],
        Duration::from_hours(1),
        now,
    );

    let events = workload(&mut Rng(0x5EED_1234_ABCD_0001));
    let violations = events
        .iter()
        .filter(|(i, e)| !scope.evaluate(ids[*i], e, &dns, now).is_in_scope())
        .count();

    // Warm up, then measure whole passes over the event list.
    let rates = rates(WARM_UP, WINDOW, WINDOWS, || {
        for (i, e) in &events {
            black_box(scope.evaluate(ids[*i], black_box(e), &dns, now));
        }
        events.len()
    });
    let per_sec = rates.median();
    eprintln!(
        "scope bench: {AGENTS} agents, {rules} rules ({:.0} per agent), compiled in {:.1} ms; \
         {} events, {:.2}% violations; {WINDOWS} windows of {WINDOW:?}: min {:.0}, median \
         {per_sec:.0}, max {:.0} evaluations/s ({:.0} ns each)",
        rules as f64 / AGENTS as f64,
        compile.as_secs_f64() * 1e3,
        events.len(),
        100.0 * violations as f64 / events.len() as f64,
        rates.min(),
        rates.max(),
        1e9 / per_sec,
    );
    println!("BENCH scope.evaluations {per_sec:.0} evaluations/s >={TARGET:.0}");
    pinned_exec_cost();
}

/// What `tools_by_hash` adds to judging an exec: one agent with `/usr/bin/*`
/// as plain globs, one with the same tools pinned by content, the same
/// exec of `/usr/bin/true` judged by each in alternating windows. The
/// pinned check opens the program, `fstat`s it and looks its version up in
/// the digest cache (hashing it once).
fn pinned_exec_cost() {
    const BATCH: usize = 2_000;
    const TEXT: &str = "[[agent]]\nname = \"plain\"\n[agent.match]\nsessions = true\n[agent.scope]\ntools = [\"/usr/bin/*\"]\n\
                        [[agent]]\nname = \"pinned\"\n[agent.match]\nsessions = true\n[agent.scope]\ntools = [\"/usr/bin/*\"]\ntools_by_hash = true\n";
    let started = Instant::now();
    let scope = Scope::compile(&Config::from_toml_str(TEXT, "pinned.toml").expect("config"))
        .expect("scope");
    let compile = started.elapsed();
    let pinned = scope.pinned_tools("pinned").expect("pinned tools");
    let program = std::fs::canonicalize("/usr/bin/true").expect("/usr/bin/true");
    let program = program.to_str().expect("utf-8 path");
    let mut e = event(0, exec(program));
    if let Some(p) = e.process.as_mut() {
        p.exe = Some(program.to_owned());
        // No process: the file is opened by its path, as for a process
        // that has exited.
        p.pid = 0;
    }
    let (dns, now) = (DnsCache::new(), Instant::now());
    let (plain, pin) = (
        scope.agent_id("plain").unwrap(),
        scope.agent_id("pinned").unwrap(),
    );
    assert!(
        scope.evaluate(pin, &e, &dns, now).is_in_scope(),
        "{program} is pinned"
    );
    let mut ns = [Vec::new(), Vec::new()];
    for round in 0..2 * WINDOWS {
        let id = if round % 2 == 0 { plain } else { pin };
        let t = Instant::now();
        for _ in 0..BATCH {
            black_box(scope.evaluate(id, black_box(&e), &dns, now));
        }
        ns[round % 2].push(t.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (plain_ns, pinned_ns) = (median(&mut ns[0]), median(&mut ns[1]));
    eprintln!(
        "tools_by_hash: {} files ({} MB) of /usr/bin pinned in {:.0} ms (config compiled in {:.0} ms); \
         an exec judged in {plain_ns:.0} ns by path, {pinned_ns:.0} ns by path and content",
        pinned.files,
        pinned.bytes / 1_000_000,
        pinned.took.as_secs_f64() * 1e3,
        compile.as_secs_f64() * 1e3,
    );
    println!(
        "BENCH scope.exec_pinned_extra {:.0} ns/exec -",
        pinned_ns - plain_ns
    );
}
