//! Attacks through sockets the connect hooks do not see, each against the
//! real kernel with a real daemon: the attack works without Vigil (and for
//! an agent whose scope allows it), and with Vigil it is reported and, for
//! an agent whose `systems` are enforced, refused.

use std::process::Output;

use serde_json::Value;
use vigil_tests::{Daemon, kernel_available, of, workload_bin};

fn wl() -> String {
    workload_bin().to_str().unwrap().to_owned()
}

// socket(2) numbers, as the workload passes them on.
const AF_INET: &str = "2";
const AF_NETLINK: &str = "16";
const AF_PACKET: &str = "17";
const SOCK_DGRAM: &str = "2";
const SOCK_RAW: &str = "3";
const IPPROTO_ICMP: &str = "1";
const NETLINK_ROUTE: &str = "0";
const NETLINK_SOCK_DIAG: &str = "4";
/// `htons(ETH_P_ALL)`: every frame of every protocol.
const ETH_P_ALL_BE: &str = "768";

/// `coder` only observes; `guarded` has its systems enforced, and with
/// them its sockets; `prober` is enforced too but may open raw sockets.
fn config() -> String {
    let wl = wl();
    format!(
        r#"
[scope]
aggregate_window_seconds = 10

[[agent]]
name = "coder"
on_violation = "alert"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1"]
  tools = ["{wl}"]

[[agent]]
name = "guarded"
on_violation = "alert"
enforce = true
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1"]
  tools = ["{wl}"]

[[agent]]
name = "prober"
on_violation = "alert"
enforce = true
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1"]
  tools = ["{wl}"]
  socket_families = ["raw"]
"#
    )
}

fn start() -> Daemon {
    Daemon::start_fn(|_| config(), "")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The socket created outside every session: the control that shows the
/// attack itself works on this machine.
fn control(family: &str, ty: &str, protocol: &str) {
    let out = std::process::Command::new(wl())
        .args(["socket", family, ty, protocol])
        .output()
        .unwrap();
    assert!(out.status.success(), "the control must work: {out:?}");
    assert_eq!(stdout(&out), "ok");
}

fn socket_event(d: &Daemon, session: &str, class: &str) -> Value {
    d.wait_for(&format!("the {class} socket of {session}"), |e| {
        e["kind"] == "socket" && e["identity"]["session"] == session && e["class"] == class
    })
}

fn anomaly(d: &Daemon, session: &str) -> Value {
    d.wait_for(&format!("the unusual_socket anomaly of {session}"), |e| {
        e["kind"] == "anomaly"
            && e["identity"]["session"] == session
            && e["anomaly"] == "unusual_socket"
    })
}

/// A raw IPv4 socket (forged packets, ICMP at will) is reported for an
/// observed agent and refused with EPERM for an enforced one: `socket(2)`
/// fails, the process lives on.
#[test]
fn a_raw_socket_is_reported_and_refused_with_eperm_for_an_enforced_agent() {
    if !kernel_available() {
        return;
    }
    control(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    let d = start();
    let raw = [
        wl(),
        "socket".into(),
        AF_INET.into(),
        SOCK_RAW.into(),
        IPPROTO_ICMP.into(),
    ];
    let raw: Vec<&str> = raw.iter().map(String::as_str).collect();

    let out = d.exec("coder", "s-raw-seen", &raw);
    assert!(out.status.success(), "observed only: {out:?}");
    assert_eq!(stdout(&out), "ok");
    let e = socket_event(&d, "s-raw-seen", "raw");
    assert_eq!(
        (
            &e["family_name"],
            &e["sock_type"],
            &e["protocol"],
            &e["blocked"]
        ),
        (&"AF_INET".into(), &3.into(), &1.into(), &false.into()),
        "{e}"
    );
    let a = anomaly(&d, "s-raw-seen");
    assert_eq!(a["action"], "observed", "{a}");

    let out = d.exec("guarded", "s-raw-refused", &raw);
    assert_eq!(stdout(&out), "err 1", "EPERM: {out:?}\n{}", d.log());
    let e = socket_event(&d, "s-raw-refused", "raw");
    assert_eq!(e["blocked"], true, "{e}");
    let a = anomaly(&d, "s-raw-refused");
    assert_eq!(a["action"], "blocked", "{a}");

    // Allowed by the scope of an enforced agent: created, not reported as
    // an anomaly (the socket itself still is).
    let out = d.exec("prober", "s-raw-allowed", &raw);
    assert_eq!(stdout(&out), "ok", "{out:?}");
    let e = socket_event(&d, "s-raw-allowed", "raw");
    assert_eq!(e["blocked"], false, "{e}");
    d.settle();
    assert!(
        of(&d.events(), "anomaly", "s-raw-allowed").is_empty(),
        "{}",
        d.dump()
    );
}

/// A packet socket sees every frame on the node's interfaces, and a netlink
/// socket other than routing talks to the kernel's own interfaces (here
/// `sock_diag`: every socket of the node). `sock_create` does not run for
/// these families: the caller is killed before `socket(2)` returns.
#[test]
fn packet_and_netlink_sockets_are_reported_and_killed_for_an_enforced_agent() {
    if !kernel_available() {
        return;
    }
    control(AF_PACKET, SOCK_RAW, ETH_P_ALL_BE);
    control(AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG);
    let d = start();
    for (class, family, protocol) in [
        ("packet", AF_PACKET, ETH_P_ALL_BE),
        ("netlink", AF_NETLINK, NETLINK_SOCK_DIAG),
    ] {
        let cmd = [&wl(), "socket", family, SOCK_RAW, protocol];
        let seen = format!("s-{class}-seen");
        let out = d.exec("coder", &seen, &cmd);
        assert_eq!(stdout(&out), "ok", "observed only: {out:?}");
        assert_eq!(socket_event(&d, &seen, class)["blocked"], false);
        assert_eq!(anomaly(&d, &seen)["action"], "observed");

        let refused = format!("s-{class}-refused");
        let out = d.exec("guarded", &refused, &cmd);
        assert!(!out.status.success(), "{out:?}");
        assert!(
            stdout(&out).is_empty(),
            "killed before socket(2) returned: {out:?}"
        );
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(9),
            "{out:?}"
        );
        assert_eq!(socket_event(&d, &refused, class)["blocked"], true);
        assert_eq!(anomaly(&d, &refused)["action"], "killed");
    }
    // One hook saw each socket: sock_create does not run for these families.
    d.settle();
    let events = d.events();
    for class in ["packet", "netlink"] {
        for session in [format!("s-{class}-seen"), format!("s-{class}-refused")] {
            assert_eq!(of(&events, "socket", &session).len(), 1, "{}", d.dump());
        }
    }
}

/// What every program needs keeps working in an enforced session: glibc's
/// `getaddrinfo` with `AI_ADDRCONFIG` and `if_nameindex` open
/// `NETLINK_ROUTE` sockets, ping sockets are datagram sockets, and none of
/// it is reported.
#[test]
fn routing_netlink_and_name_resolution_work_in_an_enforced_session() {
    if !kernel_available() {
        return;
    }
    let d = start();
    let out = d.exec(
        "guarded",
        "s-resolve",
        &[&wl(), "resolve-glibc", "localhost"],
    );
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l == "127.0.0.1" || l == "::1"),
        "{text}"
    );
    assert!(text.contains("interfaces "), "{text}");
    for (family, ty, protocol) in [
        (AF_NETLINK, SOCK_RAW, NETLINK_ROUTE),
        (AF_INET, SOCK_DGRAM, IPPROTO_ICMP),
    ] {
        let session = format!("s-ordinary-{family}-{ty}");
        let out = d.exec(
            "guarded",
            &session,
            &[&wl(), "socket", family, ty, protocol],
        );
        // A ping socket may be refused by the node's ping_group_range, never by Vigil.
        assert!(
            stdout(&out) == "ok" || (ty == SOCK_DGRAM && stdout(&out) == "err 13"),
            "{family} {ty} {protocol}: {out:?}"
        );
    }
    d.settle();
    let events = d.events();
    for session in ["s-resolve", "s-ordinary-16-3", "s-ordinary-2-2"] {
        assert!(of(&events, "socket", session).is_empty(), "{}", d.dump());
        assert!(of(&events, "anomaly", session).is_empty(), "{}", d.dump());
    }
}

/// Local servers outside every session: a stream socket the agents may
/// use, one they may not (as `/var/run/docker.sock` would be), an abstract
/// one, and a datagram socket.
struct UnixServers {
    dir: tempfile::TempDir,
    _listeners: Vec<std::os::unix::net::UnixListener>,
    _dgram: std::os::unix::net::UnixDatagram,
    abstract_name: String,
}

impl UnixServers {
    fn start() -> Self {
        use std::os::linux::net::SocketAddrExt as _;
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = Vec::new();
        for name in ["allowed.sock", "daemon.sock"] {
            listeners.push(std::os::unix::net::UnixListener::bind(dir.path().join(name)).unwrap());
        }
        let abstract_name = format!("vigil-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&abstract_name).unwrap();
        listeners.push(std::os::unix::net::UnixListener::bind_addr(&addr).unwrap());
        let dgram = std::os::unix::net::UnixDatagram::bind(dir.path().join("log.sock")).unwrap();
        Self {
            dir,
            _listeners: listeners,
            _dgram: dgram,
            abstract_name,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }
}

fn unix_config(s: &UnixServers) -> String {
    let wl = wl();
    let allowed = s.path("allowed.sock");
    format!(
        r#"
[[agent]]
name = "coder"
on_violation = "alert"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["unix://{allowed}"]
  tools = ["{wl}"]

[[agent]]
name = "guarded"
on_violation = "alert"
enforce = true
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1", "unix://{allowed}"]
  tools = ["{wl}"]
"#
    )
}

fn unix_event(d: &Daemon, session: &str) -> Value {
    d.wait_for(&format!("the unix connect of {session}"), |e| {
        e["kind"] == "unix_connect" && e["identity"]["session"] == session
    })
}

fn unapproved(d: &Daemon, session: &str) -> Value {
    d.wait_for(
        &format!("the unapproved_system anomaly of {session}"),
        |e| {
            e["kind"] == "anomaly"
                && e["identity"]["session"] == session
                && e["anomaly"] == "unapproved_system"
        },
    )
}

/// A unix socket is how an agent asks a more privileged local daemon (as
/// Docker's would) to act for it. A connect or datagram outside the
/// agent's `systems` is an `unapproved_system`, refused with EPERM when the
/// systems are enforced; the socket it lists keeps working.
#[test]
fn a_unix_socket_outside_systems_is_reported_and_refused_for_an_enforced_agent() {
    if !kernel_available() {
        return;
    }
    let s = UnixServers::start();
    let d = Daemon::start_fn(|_| unix_config(&s), "");
    let status = d.vigil_ok(&["status"]);
    assert!(
        !status.contains("missing"),
        "the unix hooks load on 6.7+: {status}"
    );
    let abstract_addr = format!("@{}", s.abstract_name);
    let attempts = [
        ("daemon", "stream", s.path("daemon.sock")),
        ("abstract", "stream", abstract_addr.clone()),
        ("dgram", "dgram", s.path("log.sock")),
    ];
    for (what, kind, address) in &attempts {
        // The control: the attack itself works without Vigil in the way.
        let out = std::process::Command::new(wl())
            .args(["unix", kind, address])
            .output()
            .unwrap();
        assert_eq!(stdout(&out), "ok", "control {what}: {out:?}");

        let seen = format!("s-unix-{what}-seen");
        let out = d.exec("coder", &seen, &[&wl(), "unix", kind, address]);
        assert_eq!(stdout(&out), "ok", "observed only: {out:?}");
        let e = unix_event(&d, &seen);
        assert_eq!(
            (&e["path"], &e["blocked"]),
            (&address.as_str().into(), &false.into()),
            "{e}"
        );
        assert_eq!(unapproved(&d, &seen)["action"], "observed");

        let refused = format!("s-unix-{what}-refused");
        let out = d.exec("guarded", &refused, &[&wl(), "unix", kind, address]);
        assert_eq!(stdout(&out), "err 1", "EPERM: {out:?}\n{}", d.log());
        let e = unix_event(&d, &refused);
        assert_eq!(e["blocked"], true, "{e}");
        let expect_op = if *kind == "dgram" {
            "sendmsg"
        } else {
            "connect"
        };
        assert_eq!(e["op"], expect_op, "{e}");
        assert_eq!(unapproved(&d, &refused)["action"], "blocked");
    }
    // The socket in systems: allowed for both, reported, no anomaly.
    let allowed = s.path("allowed.sock");
    for (agent, session) in [("coder", "s-unix-ok-seen"), ("guarded", "s-unix-ok")] {
        let out = d.exec(agent, session, &[&wl(), "unix", "stream", &allowed]);
        assert_eq!(stdout(&out), "ok", "{agent}: {out:?}");
        assert_eq!(unix_event(&d, session)["blocked"], false);
    }
    // The daemon's own socket is no exception: its API could lift the
    // agent's own revocation.
    let own = d.socket.to_str().unwrap().to_owned();
    let out = d.exec(
        "guarded",
        "s-unix-governor",
        &[&wl(), "unix", "stream", &own],
    );
    assert_eq!(stdout(&out), "err 1", "{out:?}");
    assert_eq!(unapproved(&d, "s-unix-governor")["action"], "blocked");
    d.settle();
    let events = d.events();
    for session in ["s-unix-ok-seen", "s-unix-ok"] {
        assert!(of(&events, "anomaly", session).is_empty(), "{}", d.dump());
    }
}
