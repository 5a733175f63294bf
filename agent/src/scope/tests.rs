use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::event::{
    Accept, Access, Connect, DnsQuery, Exec, FileInode, FileLink, FileOpen, Fork, Identity, Process,
};

/// Counts allocations of the current thread, so a test can prove that an
/// evaluation did not allocate.
struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = ALLOCS.with(Cell::get);
    let r = f();
    (r, ALLOCS.with(Cell::get) - before)
}

const CONFIG: &str = r#"
[[agent]]
name = "code-assistant"
on_violation = "kill"
  [agent.match]
  sessions = true
  cgroups = ["/kubepods.slice/**/cri-containerd-*.scope"]
  [agent.scope]
  systems = ["127.0.0.1:8080", "10.0.0.0/8:443", "[::1]:8080", "api.example.com:443",
             "udp://127.0.0.53:53", "*.corp.example:22", "[2001:db8::/32]:1000-2000"]
  tools = ["/usr/bin/git", "/usr/bin/python3*", "/bin/ls"]
  data = ["workspace"]
  identities = ["git-token"]

[[agent]]
name = "browser"
  [agent.match]
  sessions = true
  cgroups = ["/kubepods.slice/**"]
  [agent.scope]
  systems = ["tcp://0.0.0.0/0:443", "tcp://[::/0]:443"]
  tools = ["/usr/bin/chromium"]
  identities = ["cloud-metadata"]
  data = ["overlap-inner"]

[data.workspace]
read = ["/srv/workspace/**"]
write = ["/srv/workspace/**", "/tmp/build-*"]

[data.hr]
read = ["/data/hr/**"]

[data.overlap-outer]
read = ["/srv/shared/**"]

[data.overlap-inner]
read = ["/srv/shared/public/**"]
write = ["/srv/shared/public/out/**"]

[identity.git-token]
files = ["/var/run/secrets/git/token"]

[identity.vault]
endpoints = ["vault.internal:8200"]
"#;

struct Fixture {
    scope: Scope,
    dns: DnsCache,
    now: Instant,
    code: AgentId,
    browser: AgentId,
}

fn fixture() -> Fixture {
    let config = Config::from_toml_str(CONFIG, "t.toml").unwrap();
    let scope = Scope::compile(&config).unwrap();
    Fixture {
        code: scope.agent_id("code-assistant").unwrap(),
        browser: scope.agent_id("browser").unwrap(),
        scope,
        dns: DnsCache::new(),
        now: Instant::now(),
    }
}

fn event(payload: Payload, exe: Option<&str>) -> Event {
    Event {
        seq: 0,
        time: std::time::SystemTime::UNIX_EPOCH,
        kernel_ts_ns: 0,
        identity: Identity::default(),
        process: Some(Process {
            pid: 42,
            tid: 42,
            comm: "x".into(),
            exe: exe.map(str::to_owned),
            ..Process::default()
        }),
        payload,
    }
}

fn exec(path: &str) -> Event {
    exec_as(path, None)
}

fn exec_as(path: &str, exe: Option<&str>) -> Event {
    event(
        Payload::Exec(Exec {
            filename: path.into(),
            argv: vec![path.into()],
            argv_truncated: false,
            blocked: false,
            from_memory: false,
            inode: None,
        }),
        exe,
    )
}

fn connect(protocol: Protocol, ip: &str, port: u16, op: &str) -> Event {
    event(
        Payload::Connect(Connect {
            protocol,
            address: ip.parse().unwrap(),
            port,
            op: op.into(),
            blocked: false,
        }),
        None,
    )
}

fn tcp(ip: &str, port: u16) -> Event {
    connect(Protocol::Tcp, ip, port, "connect")
}

fn open(path: &str, access: Access) -> Event {
    event(
        Payload::FileOpen(FileOpen {
            path: path.into(),
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
            inode: None,
        }),
        None,
    )
}

impl Fixture {
    fn eval(&self, agent: AgentId, e: &Event) -> Verdict {
        self.scope.evaluate(agent, e, &self.dns, self.now)
    }

    fn ok(&self, agent: AgentId, e: &Event) {
        assert_eq!(self.eval(agent, e), Verdict::InScope, "{e:?}");
    }

    fn violation(&self, agent: AgentId, e: &Event) -> Violation {
        match self.eval(agent, e) {
            Verdict::Violation(v) => v,
            Verdict::InScope => panic!("expected a violation for {e:?}"),
        }
    }
}

#[test]
fn scope_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Scope>();
    assert_send_sync::<DnsCache>();
}

#[test]
fn agents_and_info() {
    let f = fixture();
    let info = f.scope.agent(f.code);
    assert_eq!(info.name, "code-assistant");
    assert_eq!(info.on_violation, OnViolation::Kill);
    assert!(info.sessions);
    assert_eq!(
        info.cgroups,
        vec!["/kubepods.slice/**/cri-containerd-*.scope"]
    );
    assert_eq!(f.scope.agents().len(), 2);
    assert_eq!(
        f.scope.agent_ids().collect::<Vec<_>>(),
        vec![f.code, f.browser]
    );
    assert!(f.scope.agent_id("nobody").is_none());
    assert_eq!(f.scope.aggregate_window(), Duration::from_secs(10));
    assert_eq!(f.scope.dns_refresh(), Duration::from_mins(1));
    assert_eq!(
        f.scope.host_names(),
        [
            "api.example.com",
            "metadata.google.internal",
            "vault.internal"
        ]
    );
    assert!(f.scope.identity_names().iter().any(|n| n == "vault"));
}

#[test]
fn stale_agent_ids_are_refused() {
    let f = fixture();
    let newer = fixture();
    assert!(newer.scope.try_agent(f.code).is_none());
    assert_eq!(newer.scope.agent(f.code).name, "");
    let v = newer.violation(f.code, &exec("/usr/bin/git"));
    assert_eq!(v.kind, AnomalyKind::Unattributed);
}

#[test]
fn cgroup_matching_first_agent_wins() {
    let f = fixture();
    let containerd = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abcd.scope";
    assert_eq!(f.scope.match_cgroup(containerd), Some(f.code));
    assert_eq!(
        f.scope.match_cgroup("/kubepods.slice/other/crio-x.scope"),
        Some(f.browser)
    );
    assert_eq!(f.scope.match_cgroup("/system.slice/sshd.service"), None);
    assert_eq!(f.scope.match_cgroup("/kubepods.slice"), None);
}

#[test]
fn other_event_kinds_are_in_scope() {
    let f = fixture();
    f.ok(f.code, &event(Payload::Fork(Fork { child_pid: 1 }), None));
    let accept = Accept {
        local_address: "0.0.0.0".parse().unwrap(),
        local_port: 22,
        remote_address: "10.9.9.9".parse().unwrap(),
        remote_port: 5555,
    };
    f.ok(f.code, &event(Payload::Accept(accept), None));
}

#[test]
fn tools() {
    let f = fixture();
    f.ok(f.code, &exec("/usr/bin/git"));
    f.ok(f.code, &exec("/usr/bin/python3.12"));
    f.ok(f.code, &exec("/bin/ls"));
    f.ok(f.code, &exec("/usr/bin/../bin/git"));
    let v = f.violation(f.code, &exec("/usr/bin/curl-vigil-test"));
    assert_eq!(v.kind, AnomalyKind::UnapprovedTool);
    assert_eq!(v.severity, Severity::High);
    assert_eq!(
        v.reason,
        "exec of /usr/bin/curl-vigil-test is outside tools of code-assistant"
    );
    // A traversal does not smuggle a binary past a glob.
    let v = f.violation(f.code, &exec("/usr/bin/python3/../../../tmp/evil"));
    assert_eq!(
        v.reason,
        "exec of /tmp/evil is outside tools of code-assistant"
    );
    // The enriched executable path counts, and is named when it does not help.
    f.ok(
        f.code,
        &exec_as("/opt/venv/bin/python", Some("/usr/bin/python3.12")),
    );
    let v = f.violation(f.code, &exec_as("/opt/x", Some("/opt/y")));
    assert_eq!(
        v.reason,
        "exec of /opt/x (/opt/y) is outside tools of code-assistant"
    );
}

#[test]
fn symlinked_executables_match_by_target_and_by_link() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let real = root.join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::write(real.join("tool-1.2"), b"").unwrap();
    let links = root.join("links");
    std::fs::create_dir(&links).unwrap();
    std::os::unix::fs::symlink(real.join("tool-1.2"), links.join("tool")).unwrap();
    std::os::unix::fs::symlink(real.join("tool-1.2"), links.join("other")).unwrap();
    let (real_s, links_s) = (real.display(), links.display());
    let text = format!(
        "[[agent]]\nname = \"by-target\"\n[agent.match]\nsessions = true\n[agent.scope]\ntools = [\"{real_s}/tool-*\"]\n\
         [[agent]]\nname = \"by-link\"\n[agent.match]\nsessions = true\n[agent.scope]\ntools = [\"{links_s}/tool\"]\n"
    );
    let scope = Scope::compile(&Config::from_toml_str(&text, "t").unwrap()).unwrap();
    let dns = DnsCache::new();
    let now = Instant::now();
    let by_target = scope.agent_id("by-target").unwrap();
    let by_link = scope.agent_id("by-link").unwrap();
    let link = format!("{links_s}/tool");
    assert!(
        scope
            .evaluate(by_target, &exec(&link), &dns, now)
            .is_in_scope()
    );
    assert!(
        scope
            .evaluate(by_link, &exec(&link), &dns, now)
            .is_in_scope()
    );
    // Another link to the same binary runs the same program: the same tool.
    let other = format!("{links_s}/other");
    assert!(
        scope
            .evaluate(by_link, &exec(&other), &dns, now)
            .is_in_scope()
    );
    assert!(
        scope
            .evaluate(by_target, &exec(&other), &dns, now)
            .is_in_scope()
    );
    // A link planted under an allowed name leads to another program: that
    // program is judged, not the name.
    std::fs::write(real.join("curl"), b"").unwrap();
    std::os::unix::fs::symlink(real.join("curl"), real.join("tool-evil")).unwrap();
    let planted = format!("{real_s}/tool-evil");
    for kernel_exe in [None, Some(format!("{real_s}/curl"))] {
        let Verdict::Violation(v) = scope.evaluate(
            by_target,
            &exec_as(&planted, kernel_exe.as_deref()),
            &dns,
            now,
        ) else {
            panic!("a link to curl under tool-* is curl ({kernel_exe:?})");
        };
        assert_eq!(
            v.reason,
            format!("exec of {planted} ({real_s}/curl) is outside tools of by-target")
        );
    }
}

#[test]
fn a_script_is_judged_by_the_file_its_name_leads_to() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::write(root.join("run.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::write(root.join("evil.sh"), b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink(root.join("evil.sh"), root.join("run-link.sh")).unwrap();
    let r = root.display();
    let text = format!(
        "[[agent]]\nname = \"a\"\n[agent.match]\nsessions = true\n[agent.scope]\ntools = [\"{r}/run*.sh\"]\n"
    );
    let scope = Scope::compile(&Config::from_toml_str(&text, "t").unwrap()).unwrap();
    let id = scope.agent_id("a").unwrap();
    let (dns, now) = (DnsCache::new(), Instant::now());
    // The kernel runs the interpreter; the script is the tool.
    let run = format!("{r}/run.sh");
    assert!(
        scope
            .evaluate(id, &exec_as(&run, Some("/usr/bin/dash")), &dns, now)
            .is_in_scope()
    );
    let link = format!("{r}/run-link.sh");
    let Verdict::Violation(v) =
        scope.evaluate(id, &exec_as(&link, Some("/usr/bin/dash")), &dns, now)
    else {
        panic!("a link to evil.sh is evil.sh");
    };
    assert_eq!(
        v.reason,
        format!("exec of {link} (/usr/bin/dash, {r}/evil.sh) is outside tools of a")
    );
}

#[test]
fn systems_addresses_ports_protocols() {
    let f = fixture();
    f.ok(f.code, &tcp("127.0.0.1", 8080));
    f.ok(f.code, &tcp("10.200.3.4", 443));
    f.ok(f.code, &tcp("::1", 8080));
    f.ok(f.code, &tcp("::ffff:127.0.0.1", 8080));
    f.ok(f.code, &tcp("2001:db8::5", 1500));
    f.ok(f.code, &connect(Protocol::Udp, "127.0.0.53", 53, "sendmsg"));
    let v = f.violation(f.code, &tcp("10.9.9.9", 22));
    assert_eq!(v.kind, AnomalyKind::UnapprovedSystem);
    assert_eq!(v.severity, Severity::High);
    assert_eq!(
        v.reason,
        "connect to 10.9.9.9:22 is outside systems of code-assistant"
    );
    let v = f.violation(f.code, &tcp("2001:db8::5", 2001));
    assert_eq!(
        v.reason,
        "connect to [2001:db8::5]:2001 is outside systems of code-assistant"
    );
    let v = f.violation(f.code, &connect(Protocol::Tcp, "127.0.0.53", 53, "connect"));
    assert_eq!(
        v.reason,
        "connect to 127.0.0.53:53 is outside systems of code-assistant"
    );
    let v = f.violation(f.code, &connect(Protocol::Udp, "8.8.8.8", 53, "sendmsg"));
    assert_eq!(
        v.reason,
        "udp send to 8.8.8.8:53 is outside systems of code-assistant"
    );
    let v = f.violation(f.code, &tcp("::ffff:10.9.9.9", 22));
    assert_eq!(
        v.reason,
        "connect to 10.9.9.9:22 is outside systems of code-assistant"
    );
    // getaddrinfo's source-address probe.
    f.ok(
        f.code,
        &connect(Protocol::Udp, "93.184.216.34", 0, "connect"),
    );
    assert!(
        !f.eval(
            f.code,
            &connect(Protocol::Udp, "93.184.216.34", 0, "sendmsg")
        )
        .is_in_scope()
    );
}

#[test]
fn host_names_follow_the_agents_own_dns_answers() {
    let f = fixture();
    let ip: IpAddr = "203.0.113.10".parse().unwrap();
    let v = f.violation(f.code, &tcp("203.0.113.10", 443));
    assert_eq!(
        v.reason,
        "connect to 203.0.113.10:443 is outside systems of code-assistant"
    );
    // Another agent's answer does not help.
    f.dns
        .record("browser", "api.example.com", &[ip], 300, f.now);
    assert!(!f.eval(f.code, &tcp("203.0.113.10", 443)).is_in_scope());
    f.dns
        .record("code-assistant", "api.example.com", &[ip], 300, f.now);
    f.ok(f.code, &tcp("203.0.113.10", 443));
    // Only on the allowed port, and named in the reason otherwise.
    let v = f.violation(f.code, &tcp("203.0.113.10", 80));
    assert_eq!(
        v.reason,
        "connect to 203.0.113.10:80 (api.example.com) is outside systems of code-assistant"
    );
    // Expired answers no longer count.
    let later = f.now + Duration::from_mins(5);
    assert!(
        !f.scope
            .evaluate(f.code, &tcp("203.0.113.10", 443), &f.dns, later)
            .is_in_scope()
    );
    // Subdomain patterns and the node-wide table.
    let git: IpAddr = "198.51.100.7".parse().unwrap();
    f.dns
        .record_resolved("git.corp.example", &[git], Duration::from_mins(1), f.now);
    f.ok(f.code, &tcp("198.51.100.7", 22));
    f.dns.record(
        "code-assistant",
        "corp.example",
        &["198.51.100.8".parse().unwrap()],
        60,
        f.now,
    );
    assert!(!f.eval(f.code, &tcp("198.51.100.8", 22)).is_in_scope());
}

#[test]
fn catalog_identities_on_files() {
    let f = fixture();
    let v = f.violation(f.code, &open("/root/.aws/credentials", Access::Read));
    assert_eq!(v.kind, AnomalyKind::IdentityOutsideScope);
    assert_eq!(v.severity, Severity::Critical);
    assert_eq!(v.identity.as_deref(), Some("aws-credentials"));
    assert_eq!(
        v.reason,
        "read of /root/.aws/credentials touches identity aws-credentials, outside identities of code-assistant"
    );
    for (path, id) in [
        ("/home/bob/.ssh/id_ed25519", "ssh-keys"),
        ("/home/bob/.kube/config", "kube-config"),
        (
            "/home/bob/.config/gcloud/application_default_credentials.json",
            "gcloud-credentials",
        ),
        (
            "/home/bob/.azure/msal_token_cache.json",
            "azure-credentials",
        ),
        ("/root/.docker/config.json", "docker-config"),
        ("/srv/workspace/app/.env", "dotenv"),
        ("/srv/workspace/app/.env.production", "dotenv"),
        ("/home/bob/.netrc", "netrc"),
        ("/home/bob/.git-credentials", "git-credentials"),
        (
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            "kubernetes-service-account",
        ),
        (
            "/run/secrets/kubernetes.io/serviceaccount/token",
            "kubernetes-service-account",
        ),
        (
            "/var/run/secrets/kubernetes.io/serviceaccount",
            "kubernetes-service-account",
        ),
        (
            "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
            "aws-web-identity-token",
        ),
        ("/var/lib/jenkins/.aws/credentials", "aws-credentials"),
        ("/home/bob/.ssh/../.ssh/id_rsa", "ssh-keys"),
    ] {
        let v = f.violation(f.code, &open(path, Access::Read));
        assert_eq!(v.identity.as_deref(), Some(id), "{path}");
    }
    // Carve-outs and look-alikes.
    f.ok(f.code, &open("/home/bob/.ssh/id_ed25519.pub", Access::Read));
    f.ok(
        f.code,
        &open("/srv/workspace/app/.env.example", Access::Read),
    );
    f.ok(f.code, &open("/home/bob/.ssh/known_hosts", Access::Read));
    f.ok(f.code, &open("/home/bob/.aws/config", Access::Read));
    // Writing a credential is as bad as reading it, and so is a failed attempt.
    let mut failed = open("/root/.aws/credentials", Access::Write);
    if let Payload::FileOpen(o) = &mut failed.payload {
        o.error = Some("EACCES".into());
    }
    let v = f.violation(f.code, &failed);
    assert_eq!(
        v.reason,
        "write to /root/.aws/credentials (failed: EACCES) touches identity aws-credentials, outside identities of code-assistant"
    );
    // Executing one is touching it too.
    let v = f.violation(f.code, &exec("/home/bob/.ssh/id_rsa"));
    assert_eq!(v.identity.as_deref(), Some("ssh-keys"));
}

#[test]
fn declared_identities_grant_and_deny() {
    let f = fixture();
    // Given to code-assistant: readable although in no data class of it.
    f.ok(f.code, &open("/var/run/secrets/git/token", Access::Read));
    // Writing it still needs a write glob.
    let v = f.violation(f.code, &open("/var/run/secrets/git/token", Access::Write));
    assert_eq!(v.kind, AnomalyKind::DataOutsideScope);
    let v = f.violation(f.browser, &open("/var/run/secrets/git/token", Access::Read));
    assert_eq!(v.identity.as_deref(), Some("git-token"));
    // An endpoint identity reached through a name, even inside an allowed CIDR.
    f.dns.record(
        "browser",
        "vault.internal",
        &["10.0.0.9".parse().unwrap()],
        60,
        f.now,
    );
    let v = f.violation(f.browser, &tcp("10.0.0.9", 8200));
    assert_eq!(v.identity.as_deref(), Some("vault"));
    assert_eq!(
        v.reason,
        "connect to 10.0.0.9:8200 (vault.internal) touches identity vault, outside identities of browser"
    );
}

#[test]
fn catalog_endpoints() {
    let f = fixture();
    let v = f.violation(f.code, &tcp("169.254.169.254", 80));
    assert_eq!(v.kind, AnomalyKind::IdentityOutsideScope);
    assert_eq!(v.identity.as_deref(), Some("cloud-metadata"));
    assert_eq!(
        v.reason,
        "connect to 169.254.169.254:80 touches identity cloud-metadata, outside identities of code-assistant"
    );
    assert_eq!(
        f.violation(f.code, &tcp("fd00:ec2::254", 80))
            .identity
            .as_deref(),
        Some("cloud-metadata")
    );
    assert_eq!(
        f.violation(f.code, &tcp("::ffff:169.254.169.254", 80))
            .identity
            .as_deref(),
        Some("cloud-metadata")
    );
    assert_eq!(
        f.violation(f.code, &tcp("169.254.170.2", 80))
            .identity
            .as_deref(),
        Some("aws-ecs-credentials")
    );
    assert_eq!(
        f.violation(f.code, &tcp("168.63.129.16", 80))
            .identity
            .as_deref(),
        Some("azure-wireserver")
    );
    // Azure's DNS on the same address is not a credential.
    assert_eq!(
        f.violation(
            f.code,
            &connect(Protocol::Udp, "168.63.129.16", 53, "sendmsg")
        )
        .kind,
        AnomalyKind::UnapprovedSystem
    );
    // An allowed catch-all CIDR does not cover a credential endpoint ...
    let v = f.violation(f.browser, &tcp("169.254.170.2", 443));
    assert_eq!(v.identity.as_deref(), Some("aws-ecs-credentials"));
    // ... but the identity, when given, does, on any port.
    f.ok(f.browser, &tcp("169.254.169.254", 80));
    f.ok(f.browser, &tcp("fd00:ec2::254", 80));
}

#[test]
fn data_reads_and_writes() {
    let f = fixture();
    f.ok(f.code, &open("/srv/workspace/src/main.rs", Access::Read));
    f.ok(
        f.code,
        &open("/srv/workspace/src/main.rs", Access::ReadWrite),
    );
    f.ok(f.code, &open("/usr/lib/libc.so.6", Access::Read));
    f.ok(f.code, &open("/tmp/build-1", Access::Write));
    let v = f.violation(f.code, &open("/data/hr/salaries.csv", Access::Read));
    assert_eq!(v.kind, AnomalyKind::DataOutsideScope);
    assert_eq!(v.severity, Severity::Medium);
    assert_eq!(
        v.reason,
        "read of /data/hr/salaries.csv is in data class hr, outside data of code-assistant"
    );
    let v = f.violation(
        f.code,
        &open("/srv/workspace/../../data/hr/x", Access::Read),
    );
    assert_eq!(
        v.reason,
        "read of /data/hr/x is in data class hr, outside data of code-assistant"
    );
    let v = f.violation(f.code, &open("/etc/passwd", Access::Write));
    assert_eq!(v.severity, Severity::High);
    assert_eq!(
        v.reason,
        "write to /etc/passwd is outside the writable data of code-assistant"
    );
    let v = f.violation(f.code, &open("/tmp/build-1/x", Access::ReadWrite));
    assert_eq!(
        v.reason,
        "read-write open of /tmp/build-1/x is outside the writable data of code-assistant"
    );
    // Read globs alone do not allow writing.
    assert!(
        !f.eval(f.browser, &open("/srv/shared/public/a", Access::Write))
            .is_in_scope()
    );
}

#[test]
fn write_ignore_list() {
    let f = fixture();
    for p in [
        "/dev/null",
        "/dev/tty",
        "/dev/pts/3",
        "/proc/self/fd/1",
        "/proc/thread-self/attr/current",
        "/dev/urandom",
        "/dev/shm/x",
    ] {
        f.ok(f.code, &open(p, Access::Write));
    }
    assert!(
        !f.eval(f.code, &open("/proc/1/mem", Access::Write))
            .is_in_scope()
    );
    let text = format!(
        "{CONFIG}\n[scope]\nwrite_ignore = [\"/var/cache/**\"]\nwrite_ignore_defaults = false\n"
    );
    let scope = Scope::compile(&Config::from_toml_str(&text, "t").unwrap()).unwrap();
    let code = scope.agent_id("code-assistant").unwrap();
    let dns = DnsCache::new();
    assert!(
        scope
            .evaluate(code, &open("/var/cache/x", Access::Write), &dns, f.now)
            .is_in_scope()
    );
    assert!(
        !scope
            .evaluate(code, &open("/dev/null", Access::Write), &dns, f.now)
            .is_in_scope()
    );
}

#[test]
fn overlapping_classes_a_grant_wins_and_writes_imply_reads() {
    let f = fixture();
    // browser has overlap-inner (inside overlap-outer).
    f.ok(
        f.browser,
        &open("/srv/shared/public/index.html", Access::Read),
    );
    f.ok(
        f.browser,
        &open("/srv/shared/public/out/report", Access::ReadWrite),
    );
    let v = f.violation(f.browser, &open("/srv/shared/private/x", Access::Read));
    assert_eq!(
        v.reason,
        "read of /srv/shared/private/x is in data class overlap-outer, outside data of browser"
    );
    // code-assistant has neither.
    let v = f.violation(f.code, &open("/srv/shared/public/index.html", Access::Read));
    assert!(v.reason.contains("in data class overlap-"), "{}", v.reason);
}

#[test]
fn in_scope_evaluation_does_not_allocate() {
    let f = fixture();
    f.dns.record(
        "code-assistant",
        "api.example.com",
        &["203.0.113.10".parse().unwrap()],
        300,
        f.now,
    );
    let events = [
        exec("/usr/bin/git"),
        exec("/usr/bin/python3.11"),
        tcp("10.1.2.3", 443),
        tcp("::1", 8080),
        tcp("203.0.113.10", 443),
        connect(Protocol::Udp, "127.0.0.53", 53, "sendmsg"),
        open("/srv/workspace/a/b.rs", Access::Read),
        open("/srv/workspace/a/b.rs", Access::Write),
        open("/usr/lib/x86_64-linux-gnu/libc.so.6", Access::Read),
        open("/var/run/secrets/git/token", Access::Read),
        open("/dev/null", Access::Write),
        event(Payload::Fork(Fork { child_pid: 9 }), None),
    ];
    assert!(
        allocations(|| vec![1u8]).1 >= 1,
        "the counter must see allocations"
    );
    // Warm thread-local buffers and matcher caches first.
    for e in &events {
        assert!(f.eval(f.code, e).is_in_scope(), "{e:?}");
    }
    for e in &events {
        let (verdict, n) = allocations(|| f.eval(f.code, e));
        assert!(verdict.is_in_scope());
        assert_eq!(n, 0, "evaluation of {e:?} allocated");
    }
}

#[test]
fn violation_becomes_anomaly() {
    let f = fixture();
    let e = tcp("10.9.9.9", 22);
    let Verdict::Violation(v) = f.eval(f.code, &e) else {
        panic!()
    };
    let a = v.into_anomaly(e.clone(), "observed");
    assert_eq!(a.anomaly, AnomalyKind::UnapprovedSystem);
    assert_eq!(a.count, 1);
    assert_eq!(a.action, "observed");
    assert_eq!(*a.offending, e);
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["anomaly"], "unapproved_system");
}

proptest! {
    #[test]
    fn evaluation_never_panics(
        path in "(/[a-z.]{0,6}){0,6}/?",
        ip in any::<u128>(),
        port in any::<u16>(),
        v4 in any::<bool>(),
    ) {
        let f = fixture();
        let addr = if v4 {
            std::net::Ipv4Addr::from(ip as u32).to_string()
        } else {
            std::net::Ipv6Addr::from(ip).to_string()
        };
        for e in [
            exec(&path),
            open(&path, Access::Read),
            open(&path, Access::ReadWrite),
            tcp(&addr, port),
            connect(Protocol::Udp, &addr, port, "sendmsg"),
        ] {
            let _ = f.eval(f.code, &e);
            let _ = f.eval(f.browser, &e);
        }
    }

    #[test]
    fn cidr_rule_agrees_with_ipnet(net_bits in any::<u32>(), len in 0u8..=32, probe in any::<u32>()) {
        let net = ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(net_bits), len).unwrap().trunc();
        let text = format!("[[agent]]\nname = \"a\"\n[agent.match]\nsessions = true\n[agent.scope]\nsystems = [\"{net}:443\"]\n");
        let scope = Scope::compile(&Config::from_toml_str(&text, "t").unwrap()).unwrap();
        let a = scope.agent_id("a").unwrap();
        let probe = std::net::Ipv4Addr::from(probe);
        let e = tcp(&probe.to_string(), 443);
        let is_identity = matches!(
            scope.evaluate(a, &e, &DnsCache::new(), Instant::now()),
            Verdict::Violation(Violation { kind: AnomalyKind::IdentityOutsideScope, .. })
        );
        prop_assume!(!is_identity);
        prop_assert_eq!(
            scope.evaluate(a, &e, &DnsCache::new(), Instant::now()).is_in_scope(),
            net.contains(&probe)
        );
    }
}

#[tokio::test]
async fn periodic_resolver_fills_the_node_table() {
    let text = "[[agent]]\nname = \"db\"\n[agent.match]\nsessions = true\n[agent.scope]\nsystems = [\"localhost:5432\"]\n[scope]\ndns_refresh_seconds = 1\n";
    let scope = Arc::new(Scope::compile(&Config::from_toml_str(text, "t").unwrap()).unwrap());
    let db = scope.agent_id("db").unwrap();
    let dns = Arc::new(DnsCache::new());
    let v4 = tcp("127.0.0.1", 5432);
    let v6 = tcp("::1", 5432);
    let in_scope = |dns: &DnsCache| {
        let now = Instant::now();
        scope.evaluate(db, &v4, dns, now).is_in_scope()
            || scope.evaluate(db, &v6, dns, now).is_in_scope()
    };
    assert!(!in_scope(&dns), "nothing resolved yet");
    let s = Arc::clone(&scope);
    let task = dns::spawn_resolver(Arc::clone(&dns), move || Arc::clone(&s));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !in_scope(&dns) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    assert!(in_scope(&dns), "resolver did not record localhost");
    // Another port is still out of scope.
    assert!(
        !scope
            .evaluate(db, &tcp("127.0.0.1", 5433), &dns, Instant::now())
            .is_in_scope()
    );
}

/// The dynamic loader run directly runs the program its arguments name:
/// that program is the tool judged, whatever the loader's own standing.
#[test]
fn a_program_run_through_the_dynamic_loader_is_the_tool() {
    let f = fixture();
    let through_loader = |argv: &[&str]| {
        event(
            Payload::Exec(Exec {
                filename: "/lib64/ld-linux-x86-64.so.2".into(),
                argv: argv.iter().map(|a| (*a).to_owned()).collect(),
                argv_truncated: false,
                blocked: false,
                from_memory: false,
                inode: None,
            }),
            Some("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        )
    };
    f.ok(
        f.code,
        &through_loader(&["/lib64/ld-linux-x86-64.so.2", "/usr/bin/git", "status"]),
    );
    let v = f.violation(
        f.code,
        &through_loader(&[
            "/lib64/ld-linux-x86-64.so.2",
            "--argv0",
            "git",
            "/tmp/payload",
        ]),
    );
    assert_eq!(v.kind, AnomalyKind::UnapprovedTool);
    assert!(v.reason.contains("/tmp/payload"), "{}", v.reason);
    assert!(v.reason.contains("dynamic loader"), "{}", v.reason);
}

fn query(name: &str) -> Event {
    event(
        Payload::DnsQuery(DnsQuery {
            server: "127.0.0.53".parse().unwrap(),
            server_port: 53,
            client: "127.0.0.1".parse().unwrap(),
            client_port: 40_000,
            id: 7,
            name: name.into(),
            qtype: 1,
        }),
        None,
    )
}

#[test]
fn dns_queries_are_judged_by_name_and_shape() {
    let f = fixture();
    // Names of systems, on any port, exact and by subdomain pattern.
    f.ok(f.code, &query("api.example.com"));
    f.ok(f.code, &query("git.corp.example"));
    // As a pod's search list expands them, under cluster.local only.
    f.ok(f.code, &query("api.example.com.default.svc.cluster.local"));
    f.ok(f.code, &query("api.example.com.cluster.local"));
    for name in [
        "api.example.com.evil.example",
        "api.example.com.notcluster.local",
        "cluster.local",
        "example.com",
        // An identity endpoint the agent was not given.
        "vault.internal",
    ] {
        let v = f.violation(f.code, &query(name));
        assert_eq!(v.kind, AnomalyKind::UnapprovedSystem, "{name}");
        assert_eq!(
            v.reason,
            format!("dns query for {name} to 127.0.0.53:53 is outside systems of code-assistant")
        );
    }
    // Encoded data under an allowed domain, then outside every system.
    let data = "orugkidbobusa23fpeqgs4zaonvs23djozss2ndg";
    let v = f.violation(f.code, &query(&format!("{data}.git.corp.example")));
    assert_eq!(v.kind, AnomalyKind::DnsExfiltrationSuspected);
    assert_eq!(v.severity, Severity::High);
    assert_eq!(
        v.reason,
        "dns query to 127.0.0.53:53 under git.corp.example has a label with 32 or more \
         characters of more than 4 bits of entropy each: data may be encoded in the name"
    );
    // Another chunk of the same tunnel folds into the same report.
    let v2 = f.violation(f.code, &query(&format!("{}.git.corp.example", &data[1..])));
    assert_eq!(v2.reason, v.reason);
    let v = f.violation(f.code, &query(&format!("{}.t.example", "a".repeat(60))));
    assert_eq!(
        v.reason,
        "dns query to 127.0.0.53:53 under t.example has a label longer than 50 characters: \
         data may be encoded in the name, and the name is outside systems of code-assistant"
    );
}

#[test]
fn dns_label_limits_come_from_the_config() {
    let text = format!(
        "{CONFIG}\n[scope]\ndns_long_label = 10\ndns_entropy_label = 63\ndns_search_domains = [\"Corp.Internal.\"]\n"
    );
    let config = Config::from_toml_str(&text, "t.toml").unwrap();
    let scope = Scope::compile(&config).unwrap();
    let code = scope.agent_id("code-assistant").unwrap();
    let dns = DnsCache::new();
    let eval = |name: &str| scope.evaluate(code, &query(name), &dns, Instant::now());
    assert!(eval("api.example.com.corp.internal").is_in_scope());
    assert!(!eval("api.example.com.default.svc.cluster.local").is_in_scope());
    match eval("elevenchars.corp.example") {
        Verdict::Violation(v) => assert_eq!(v.kind, AnomalyKind::DnsExfiltrationSuspected),
        Verdict::InScope => panic!("a label of 11 characters is long here"),
    }
}

fn link(op: &str, target: &str, path: &str, inode: Option<FileInode>) -> Event {
    event(
        Payload::FileLink(FileLink {
            op: op.into(),
            syscall: "linkat".into(),
            target: target.into(),
            raw_target: None,
            path: path.into(),
            raw_path: None,
            inode,
            error: None,
            path_truncated: false,
            blocked: false,
        }),
        None,
    )
}

#[test]
fn links_to_credentials_and_foreign_data_are_violations() {
    let f = fixture();
    // Inside the workspace: in scope, whatever the kind of link.
    for op in ["hardlink", "symlink", "rename"] {
        f.ok(
            f.code,
            &link(op, "/srv/workspace/a", "/srv/workspace/b", None),
        );
    }
    // code-assistant was given git-token: in scope; the browser was not.
    f.ok(
        f.code,
        &link(
            "symlink",
            "/var/run/secrets/git/../git/token",
            "/srv/workspace/t",
            None,
        ),
    );
    let v = f.violation(
        f.browser,
        &link(
            "hardlink",
            "/var/run/secrets/git/token",
            "/srv/shared/public/t",
            None,
        ),
    );
    assert_eq!(v.kind, AnomalyKind::LinkToProtected);
    assert_eq!(v.severity, Severity::Critical);
    assert_eq!(v.identity.as_deref(), Some("git-token"));
    assert_eq!(
        v.reason,
        "hard link /srv/shared/public/t to /var/run/secrets/git/token names identity \
         git-token, outside identities of browser"
    );
    // Data of a class the agent was not given.
    let v = f.violation(
        f.code,
        &link("rename", "/data/hr/pay.csv", "/srv/workspace/p", None),
    );
    assert_eq!(v.kind, AnomalyKind::LinkToProtected);
    assert_eq!(v.severity, Severity::High);
    assert_eq!(
        v.reason,
        "rename of /data/hr/pay.csv to /srv/workspace/p names data class hr, outside data of \
         code-assistant"
    );
}

const SOCKETS: &str = r#"
[[agent]]
name = "ops"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["unix:///var/run/docker.sock", "unix://@bus"]
  socket_families = ["netlink"]
"#;

fn unix_connect(path: &str) -> Event {
    event(
        Payload::UnixConnect(crate::event::UnixConnect {
            path: path.into(),
            op: "connect".into(),
            sock_type: "stream".into(),
            blocked: false,
        }),
        None,
    )
}

fn socket(class: &str, family: u32) -> Event {
    event(
        Payload::Socket(crate::event::Socket {
            class: class.into(),
            family,
            family_name: family.to_string(),
            sock_type: 3,
            protocol: 0,
            blocked: false,
        }),
        None,
    )
}

#[test]
fn unix_sockets_are_systems_compared_exactly() {
    let config = Config::from_toml_str(SOCKETS, "t.toml").unwrap();
    let scope = Scope::compile(&config).unwrap();
    let ops = scope.agent_id("ops").unwrap();
    let f = Fixture {
        code: ops,
        browser: ops,
        scope,
        dns: DnsCache::new(),
        now: Instant::now(),
    };
    f.ok(ops, &unix_connect("/var/run/docker.sock"));
    f.ok(ops, &unix_connect("@bus"));
    for outside in [
        "/run/containerd/containerd.sock",
        "@bus2",
        "docker.sock",
        "@",
    ] {
        let v = f.violation(ops, &unix_connect(outside));
        assert_eq!(v.kind, AnomalyKind::UnapprovedSystem, "{outside}");
        assert!(v.reason.contains(outside), "{}", v.reason);
    }
    let mut listed: Vec<&str> = f.scope.unix_systems(ops).collect();
    listed.sort_unstable();
    assert!(listed.contains(&"/var/run/docker.sock"), "{listed:?}");
    assert!(listed.contains(&"@bus"), "{listed:?}");
}

#[test]
fn unix_aliases_add_the_resolved_directory() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
    let via_link = dir.path().join("link/app.sock");
    let aliases = unix_aliases(via_link.to_str().unwrap());
    let real = std::fs::canonicalize(&real).unwrap().join("app.sock");
    assert_eq!(
        aliases,
        [
            via_link.to_str().unwrap().to_owned(),
            real.to_str().unwrap().to_owned()
        ]
    );
    // Already resolved, abstract, or in no directory there is: one spelling.
    assert_eq!(unix_aliases(real.to_str().unwrap()).len(), 1);
    assert_eq!(unix_aliases("@bus"), ["@bus"]);
    assert_eq!(unix_aliases("/no/such/dir/x.sock"), ["/no/such/dir/x.sock"]);
}

#[test]
fn socket_classes_outside_socket_families_are_unusual() {
    let config = Config::from_toml_str(SOCKETS, "t.toml").unwrap();
    let scope = Scope::compile(&config).unwrap();
    let ops = scope.agent_id("ops").unwrap();
    let dns = DnsCache::new();
    let eval = |e: &Event| scope.evaluate(ops, e, &dns, Instant::now());
    assert_eq!(eval(&socket("netlink", 16)), Verdict::InScope);
    for (class, family) in [("packet", 17), ("raw", 2), ("other", 31)] {
        match eval(&socket(class, family)) {
            Verdict::Violation(v) => {
                assert_eq!(v.kind, AnomalyKind::UnusualSocket);
                assert!(v.reason.starts_with(class), "{}", v.reason);
            }
            Verdict::InScope => panic!("{class} is outside socket_families"),
        }
    }
}

#[test]
fn leaving_the_session_is_always_an_escape() {
    let config = Config::from_toml_str(SOCKETS, "t.toml").unwrap();
    let scope = Scope::compile(&config).unwrap();
    let ops = scope.agent_id("ops").unwrap();
    let e = event(
        Payload::SessionEscape(crate::event::SessionEscape {
            moved_pid: 42,
            self_move: true,
            created_there: false,
            to_cgroup_id: 7,
            to_cgroup: Some("/elsewhere".into()),
            blocked: false,
        }),
        None,
    );
    match scope.evaluate(ops, &e, &DnsCache::new(), Instant::now()) {
        Verdict::Violation(v) => {
            assert_eq!(
                (v.kind, v.severity),
                (AnomalyKind::SessionEscape, Severity::Critical)
            );
            assert!(v.reason.contains("/elsewhere"), "{}", v.reason);
        }
        Verdict::InScope => panic!("an escape is never in scope"),
    }
}

#[test]
fn a_program_no_file_system_names_is_in_scope_only_when_allowed_explicitly() {
    let text = "[[agent]]\nname = \"strict\"\n[agent.match]\nsessions = true\n[agent.scope]\ntools = [\"/**\"]\n\
                [[agent]]\nname = \"fileless\"\n[agent.match]\nsessions = true\n[agent.scope]\ntools = [\"/**\"]\nexec_from_memory = true\n";
    let scope = Scope::compile(&Config::from_toml_str(text, "t").unwrap()).unwrap();
    let (dns, now) = (DnsCache::new(), Instant::now());
    let mut e = exec_as("/dev/fd/3", Some("/memfd:payload (deleted)"));
    if let Payload::Exec(x) = &mut e.payload {
        x.from_memory = true;
    }
    // `/**` matches the memfd's name: the tools do not decide this.
    let Verdict::Violation(v) = scope.evaluate(scope.agent_id("strict").unwrap(), &e, &dns, now)
    else {
        panic!("a memfd is never in scope by a glob");
    };
    assert_eq!(v.kind, AnomalyKind::ExecFromMemory);
    assert_eq!(v.severity, Severity::Critical);
    assert_eq!(
        v.reason,
        "exec of /memfd:payload (deleted) (/dev/fd/3), a program no file system names, by strict"
    );
    assert!(
        scope
            .evaluate(scope.agent_id("fileless").unwrap(), &e, &dns, now)
            .is_in_scope()
    );
}

#[test]
fn a_tamper_attempt_is_never_in_scope() {
    let f = fixture();
    let e = event(
        Payload::TamperAttempt(crate::event::TamperAttempt {
            method: "ptrace".into(),
            detail: "PTRACE_SEIZE".into(),
            target_tid: Some(812),
            blocked: false,
        }),
        None,
    );
    let v = f.violation(f.code, &e);
    assert_eq!(v.kind, AnomalyKind::TamperAttempt);
    assert_eq!(
        v.reason,
        "ptrace PTRACE_SEIZE of the daemon (thread 812) by code-assistant"
    );
}
