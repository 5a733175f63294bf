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

/// The first 40 characters of base32 of "the api key is sk-live-4f9a2b7c1d",
/// as a tunnel would put data into a name (4.18 bits per character).
const ENCODED: &str = "orugkidbobusa23fpeqgs4zaonvs23djozss2ndg";

/// The `dns_query` event of session `session` for `name`.
fn query_seen(d: &Daemon, session: &str, name: &str) -> Value {
    d.wait_for(&format!("dns query for {name}"), |e| {
        e["kind"] == "dns_query" && e["identity"]["session"] == session && e["name"] == name
    })
}

/// Anomalies of `session` whose offending query asked for `name`.
fn about(d: &Daemon, session: &str, name: &str) -> Vec<Value> {
    d.events()
        .into_iter()
        .filter(|e| {
            e["kind"] == "anomaly"
                && e["identity"]["session"] == session
                && e["offending"]["name"] == name
        })
        .collect()
}

/// An agent may use an approved resolver, yet the names it asks are data
/// that reach the resolver and every server of the names' domains: asking
/// an approved resolver for a name outside systems, or for one that
/// carries encoded data, is the attack. Each query below resolves (the
/// resolver answers, as a real one would); before query names were judged
/// none of them was reported, since the resolver itself is in systems.
#[test]
fn query_names_outside_systems_or_carrying_data_are_reported() {
    if !kernel_available() {
        return;
    }
    let d = Daemon::start(
        r#"
[scope]
aggregate_window_seconds = 1

[[agent]]
name = "asker"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["udp://127.0.0.4:53", "api.test.internal:443", "*.cdn.test.internal:443"]
  tools = ["/**"]

[[agent]]
name = "tunnel"
on_violation = "kill"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["udp://127.0.0.4:53", "*.cdn.test.internal:443"]
  tools = ["/**"]

# Runs the marker of `Daemon::settle`.
[[agent]]
name = "coder"
  [agent.match]
  sessions = true
  [agent.scope]
  tools = ["/**"]
"#,
    );
    let _dns = DnsServer::on("127.0.0.4:53", "127.0.0.9".parse().unwrap());
    let mut s = Served::start(&d, "asker", "s-ask");
    let mut ask = |name: &str| {
        assert_eq!(
            s.ask(&format!("dns 127.0.0.4:53 {name}")).as_deref(),
            Some("ok 127.0.0.9"),
            "{name} resolves through the approved resolver"
        );
        query_seen(&d, "s-ask", name)
    };

    // Controls: names of systems, also as a pod's search list expands
    // them, and a content hash under an allowed domain.
    let ordinary = [
        "api.test.internal",
        "api.test.internal.default.svc.cluster.local",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4.cdn.test.internal",
        "k8s-default-ingressw-0a1b2c3d4e-1234567890.cdn.test.internal",
    ];
    for name in ordinary {
        let q = ask(name);
        assert_eq!(q["server"], "127.0.0.4", "{q}");
        assert_eq!(q["server_port"], 53, "{q}");
        assert_eq!(q["qtype"], 1, "{q}");
        assert!(q["process"]["pid"].as_u64().unwrap() > 0, "{q}");
    }

    // A name outside systems, through the approved resolver.
    ask("pastebin.example");
    let a = d.anomaly("s-ask", "unapproved_system");
    assert_eq!(
        a["reason"], "dns query for pastebin.example to 127.0.0.4:53 is outside systems of asker",
        "{a}"
    );
    assert_eq!(a["offending"]["kind"], "dns_query", "{a}");
    assert_eq!(a["action"], "observed", "{a}");

    // Data in a name under an allowed domain: a high-entropy label, and a
    // long one (hex, which no entropy bound separates from hashes).
    let encoded = format!("{ENCODED}.x.cdn.test.internal");
    ask(&encoded);
    let a = d.wait_for("high-entropy label", |e| {
        e["kind"] == "anomaly"
            && e["anomaly"] == "dns_exfiltration_suspected"
            && e["offending"]["name"] == encoded.as_str()
    });
    assert_eq!(
        a["reason"],
        "dns query to 127.0.0.4:53 under x.cdn.test.internal has a label with 32 or more \
         characters of more than 4 bits of entropy each: data may be encoded in the name",
        "{a}"
    );
    assert_eq!(a["severity"], "high", "{a}");
    let long = format!("{}.cdn.test.internal", &"0123456789abcdef".repeat(4)[..56]);
    ask(&long);
    let a = d.wait_for("long label", |e| {
        e["kind"] == "anomaly"
            && e["anomaly"] == "dns_exfiltration_suspected"
            && e["offending"]["name"] == long.as_str()
    });
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .contains("under cdn.test.internal has a label longer than 50 characters"),
        "{a}"
    );

    // An agent with on_violation = "kill" dies for the first encoded name.
    let mut t = Served::start(&d, "tunnel", "s-tunnel");
    let exfil = format!("{ENCODED}.y.cdn.test.internal");
    let _ = t.ask(&format!("dns 127.0.0.4:53 {exfil}"));
    let a = d.anomaly("s-tunnel", "dns_exfiltration_suspected");
    assert_eq!(a["action"], "killed", "{a}");
    assert_eq!(t.wait_signal(), Some(9));

    d.settle();
    for name in ordinary {
        let found = about(&d, "s-ask", name);
        assert!(found.is_empty(), "{name}: {found:#?}");
    }
    // The sends to the resolver are in scope: the names were the only news.
    let others: Vec<Value> = d
        .events()
        .into_iter()
        .filter(|e| {
            e["kind"] == "anomaly"
                && e["identity"]["session"] == "s-ask"
                && e["offending"]["kind"] != "dns_query"
        })
        .collect();
    assert!(others.is_empty(), "{others:#?}");
}
