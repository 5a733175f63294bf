//! Revocation latency, against a real daemon and kernel:
//!
//! - automatic revocation: an agent with `on_violation = "revoke"` runs an
//!   out-of-scope tool; the `revocation` event's `latency_ns` is the time
//!   from the offending kernel event to the kernel map update. p50/p99 over
//!   the trials (target p99 < 1 ms);
//! - `Revoke` call to first blocked syscall: after `vigil revoke` returns,
//!   the session's very next connect must fail; the figure is how many
//!   connects got through after a `Revoke` returned (must be 0).
//!
//! Prints `BENCH` lines for `cargo xtask bench`. Needs root.

use std::{net::TcpListener, time::Instant};

use vigil_tests::{Daemon, Served, workload_bin};

fn main() {
    let trials: usize = std::env::var("VIGIL_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    assert!(
        vigil_tests::kernel_available(),
        "the revocation bench needs root"
    );
    let l = TcpListener::bind("127.0.0.1:0").expect("listener");
    let addr = l.local_addr().expect("addr").to_string();
    // Accept and drop, so the backlog never fills over thousands of trials.
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    let wl = workload_bin();
    let d = Daemon::start_with(
        &format!(
            r#"
[scope]
aggregate_window_seconds = 0
[[agent]]
name = "strict"
on_violation = "revoke"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.0/8"]
  tools = ["{wl}"]
"#,
            wl = wl.display()
        ),
        "",
    );
    let mut latencies = Vec::with_capacity(trials);
    let mut leaked = 0u64;
    let started = Instant::now();
    for i in 0..trials {
        let session = format!("b-{i}");
        let mut s = Served::start(&d, "strict", &session);
        // Out-of-scope tool: the daemon revokes the session on its exec event.
        let _ = s.ask("exec /usr/bin/true");
        let ev = d.wait_for("revocation", |e| {
            e["kind"] == "revocation" && e["session"] == session.as_str()
        });
        latencies.push(ev["latency_ns"].as_u64().expect("latency_ns"));
        let out = d.vigil(&[
            "restore",
            "strict",
            "--session",
            &session,
            "--reason",
            "bench",
        ]);
        assert!(out.status.success(), "restore: {out:?}");
        assert_eq!(
            s.ask(&format!("connect {addr}")).as_deref(),
            Some("ok"),
            "restored"
        );
        // Operator revoke: the next syscall after the call returns must fail.
        let out = d.vigil(&[
            "revoke",
            "strict",
            "--session",
            &session,
            "--reason",
            "bench",
        ]);
        assert!(out.status.success(), "revoke: {out:?}");
        if s.ask(&format!("connect {addr}")).as_deref() == Some("ok") {
            leaked += 1;
        }
        drop(s);
        if i % 100 == 99 {
            eprintln!("revocation: {} trials in {:.1?}", i + 1, started.elapsed());
        }
    }
    latencies.sort_unstable();
    // How much of it was the daemon waking up: the daemon logs when it read
    // each offending record.
    let mut read: Vec<u64> = d
        .log()
        .lines()
        .filter_map(|l| l.split("read after ").nth(1))
        .filter_map(|r| r.split(' ').next()?.parse().ok())
        .collect();
    read.sort_unstable();
    eprintln!(
        "revocation: slowest reads (ms): {:?}",
        read.iter()
            .rev()
            .take(10)
            .map(|&x| x as f64 / 1e6)
            .collect::<Vec<_>>()
    );
    let pct = |v: &[u64], p: f64| {
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .map_or(f64::NAN, |&x| x as f64 / 1e6)
    };
    println!(
        "BENCH revocation_auto_latency_p50 {:.3} ms -",
        pct(&latencies, 0.50)
    );
    println!(
        "BENCH revocation_auto_latency_p99 {:.3} ms <=1",
        pct(&latencies, 0.99)
    );
    println!(
        "BENCH revocation_auto_read_p50 {:.3} ms -",
        pct(&read, 0.50)
    );
    println!(
        "BENCH revocation_auto_read_p99 {:.3} ms -",
        pct(&read, 0.99)
    );
    println!("BENCH revocation_syscalls_allowed_after_revoke {leaked} count <=0");
}
