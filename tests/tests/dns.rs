//! DNS answers widen an enforced agent's systems only when they are real
//! answers: from a resolver in its `systems`, to a query its socket sent,
//! sent by no process of an agent. Each forgery below is one an agent could
//! try from inside its own session; the control at the end shows the same
//! name does open the address when the approved resolver answers.

use std::{
    net::{TcpListener, UdpSocket},
    time::{Duration, Instant},
};

use serde_json::Value;
use vigil_tests::{Daemon, DnsServer, Served, kernel_available};

const EPERM: &str = "err 1";

/// An A answer for `name` pointing at `addr`, with message id `id`, as a
/// resolver would send it.
fn answer(name: &str, id: u16, addr: [u8; 4]) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    for label in name.split('.') {
        b.push(u8::try_from(label.len()).unwrap());
        b.extend_from_slice(label.as_bytes());
    }
    b.extend_from_slice(&[0, 0, 1, 0, 1]);
    b.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4]);
    b.extend_from_slice(&addr);
    b
}

/// Waits for the session's DNS answer from `server`. The daemon loads what
/// it believes of an answer into the kernel before it writes the event out,
/// so a connect after this sees the allowlist as the answer left it.
fn answer_seen(d: &Daemon, server: &str) {
    d.wait_for(&format!("dns answer from {server}"), |e| {
        e["kind"] == "dns_answer" && e["identity"]["session"] == "s-forge" && e["server"] == server
    });
}

/// Waits for the `dns_answer_rejected` anomaly whose reason contains `needle`.
fn rejected(d: &Daemon, needle: &str) -> Value {
    d.wait_for(&format!("dns answer rejected: {needle}"), |e| {
        e["kind"] == "anomaly"
            && e["anomaly"] == "dns_answer_rejected"
            && e["identity"]["session"] == "s-forge"
            && e["reason"].as_str().is_some_and(|r| r.contains(needle))
    })
}

#[test]
fn forged_dns_answers_open_nothing_and_a_real_one_does() {
    if !kernel_available() {
        return;
    }
    let target = TcpListener::bind("127.0.0.9:0").unwrap();
    let port = target.local_addr().unwrap().port();
    // The resolver, a UDP service on 127.0.0.2 (any port, 53 included) and
    // a name; the target address is allowed only as that name's answer.
    let d = Daemon::start(&format!(
        r#"
[scope]
aggregate_window_seconds = 1

[[agent]]
name = "fenced"
enforce = true
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["udp://127.0.0.1:53", "udp://127.0.0.2", "api.test.internal:{port}"]
  tools = ["/**"]

# Runs the marker of `Daemon::settle`.
[[agent]]
name = "coder"
  [agent.match]
  sessions = true
  [agent.scope]
  tools = ["/**"]
"#
    ));
    let mut s = Served::start(&d, "fenced", "s-forge");
    let connect = format!("connect 127.0.0.9:{port}");
    assert_eq!(s.ask(&connect).as_deref(), Some(EPERM));

    // An answer from an address that is no resolver of the agent (its query
    // there is refused, so the answer comes unasked).
    assert_eq!(
        s.ask("forge 127.0.0.3:53 127.0.0.2 api.test.internal 127.0.0.9")
            .as_deref(),
        Some("ok unasked")
    );
    answer_seen(&d, "127.0.0.3");
    assert_eq!(s.ask(&connect).as_deref(), Some(EPERM));
    let a = rejected(&d, "127.0.0.3:53 is not a resolver in systems of fenced");
    assert_eq!(a["offending"]["kind"], "dns_answer", "{a}");
    assert_eq!(a["offending"]["addresses"][0], "127.0.0.9", "{a}");

    // The agent's own server on an address its systems allow for UDP: the
    // query and the answer match, but an agent's process sent the answer.
    assert_eq!(
        s.ask("forge 127.0.0.2:53 127.0.0.2 api.test.internal 127.0.0.9")
            .as_deref(),
        Some("ok asked")
    );
    answer_seen(&d, "127.0.0.2");
    assert_eq!(s.ask(&connect).as_deref(), Some(EPERM));
    rejected(&d, "a process of an agent sent it");

    // An unsolicited answer from the approved resolver's own address (sent
    // from outside the session) to a socket that asked nothing.
    let bound = s.ask("udp-bind 127.0.0.1:0").unwrap();
    let client_port: u16 = bound
        .strip_prefix("ok ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("udp-bind: {bound}"));
    {
        let resolver = UdpSocket::bind("127.0.0.1:53").expect("bind 127.0.0.1:53");
        resolver
            .send_to(
                &answer("api.test.internal", 0x1234, [127, 0, 0, 9]),
                ("127.0.0.1", client_port),
            )
            .unwrap();
        assert!(s.ask("udp-recv").unwrap().starts_with("ok "));
    }
    answer_seen(&d, "127.0.0.1");
    assert_eq!(s.ask(&connect).as_deref(), Some(EPERM));
    rejected(&d, "sent 127.0.0.1:53 no query");

    // Control: the approved resolver answers the agent's own query, and the
    // same name now opens the address.
    let _dns = DnsServer::start("127.0.0.9".parse().unwrap());
    assert_eq!(
        s.ask("dns 127.0.0.1:53 api.test.internal").as_deref(),
        Some("ok 127.0.0.9")
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = s.ask(&connect);
        if r.as_deref() == Some("ok") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a real answer never opened the address: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.settle();
    let rejections: Vec<Value> = d
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "anomaly" && e["anomaly"] == "dns_answer_rejected")
        .collect();
    assert_eq!(rejections.len(), 3, "{rejections:#?}");
}
