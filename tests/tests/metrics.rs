//! The Prometheus endpoint of a real daemon, after a known
//! workload, agrees with what the daemon journaled and reports.

// Paths are written into TOML with `{:?}` (a quoted, escaped string), and
// small helpers sit next to the steps that use them.
#![allow(clippy::unnecessary_debug_formatting, clippy::items_after_statements)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::kube::{count, free_port, sample, scrape};
use vigil_tests::{Daemon, kernel_available, pb};

/// `coder` may run only `true` and `echo`: `env` is an unapproved tool.
fn config(port: u16, window: u32) -> String {
    format!(
        r#"
[scope]
aggregate_window_seconds = {window}

[metrics]
listen = "127.0.0.1:{port}"

[[agent]]
name = "coder"
  [agent.match]
  sessions = true
  [agent.scope]
  tools = ["/bin/true", "/usr/bin/true", "/bin/echo", "/usr/bin/echo"]
  data = ["everything"]

[data.everything]
read = ["/**"]
write = ["/**"]
"#
    )
}

fn scrape_port(port: u16) -> String {
    scrape(([127, 0, 0, 1], port).into()).unwrap_or_else(|e| panic!("scraping /metrics: {e}"))
}

fn value(text: &str, series: &str) -> u64 {
    count(text, series).unwrap_or_else(|| panic!("no count {series} in:\n{text}"))
}

/// Events per kind, and anomalies per (kind, agent), in the output file.
fn counts(events: &[Value]) -> (BTreeMap<String, u64>, BTreeMap<(String, String), u64>) {
    let mut kinds = BTreeMap::new();
    let mut anomalies = BTreeMap::new();
    for e in events {
        let kind = e["kind"].as_str().unwrap_or_default().to_owned();
        if kind == "anomaly" {
            let key = (
                e["anomaly"].as_str().unwrap_or_default().to_owned(),
                e["identity"]["agent"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            *anomalies.entry(key).or_insert(0) += 1;
        }
        *kinds.entry(kind).or_insert(0) += 1;
    }
    (kinds, anomalies)
}

/// Scrapes until the exposition agrees with the output file (both lag the
/// kernel a little), then returns the scrape and the events.
fn agreeing(d: &Daemon, port: u16) -> (String, Vec<Value>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape_port(port);
        let events = d.events();
        let (kinds, anomalies) = counts(&events);
        let by_kind = kinds
            .iter()
            .all(|(k, n)| count(&text, &format!("vigil_events_total{{kind=\"{k}\"}}")) == Some(*n));
        let by_anomaly = anomalies.iter().all(|((k, a), n)| {
            count(
                &text,
                &format!("vigil_anomalies_total{{kind=\"{k}\",agent=\"{a}\"}}"),
            ) == Some(*n)
        });
        let total: u64 = text
            .lines()
            .filter(|l| l.starts_with("vigil_events_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum();
        if by_kind && by_anomaly && total == events.len() as u64 {
            return (text, events);
        }
        assert!(
            Instant::now() < deadline,
            "/metrics never agreed with the output file ({kinds:?}, {anomalies:?}):\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metrics_expose_the_listed_series_with_correct_values() {
    if !kernel_available() {
        return;
    }
    let port = free_port();
    let d = Daemon::start(&config(port, 1));
    for n in 0..3 {
        let out = d.exec(
            "coder",
            &format!("m-{n}"),
            &["/bin/true", &format!("m-{n}")],
        );
        assert!(out.status.success(), "{out:?}");
    }
    // One unapproved tool: `env` (which then runs `true`, in scope).
    let out = d.exec("coder", "m-env", &["/usr/bin/env", "true"]);
    assert!(out.status.success(), "{out:?}");
    d.wait_for("the anomaly", |e| {
        e["kind"] == "anomaly" && e["identity"]["session"] == "m-env"
    });
    d.settle();

    let (text, events) = agreeing(&d, port);
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    assert!(value(&text, "vigil_events_total{kind=\"exec\"}") >= 5);
    assert_eq!(
        value(
            &text,
            "vigil_anomalies_total{kind=\"unapproved_tool\",agent=\"coder\"}"
        ),
        1
    );
    // Anomalies carry the kernel time of the event that raised them.
    let kernel_events = events
        .iter()
        .filter(|e| e["kind"] != "anomaly" && e["kernel_ts_ns"].as_u64().unwrap_or(0) != 0)
        .count();
    assert!(value(&text, "vigil_ring_records_read_total") >= kernel_events as u64);
    assert_eq!(value(&text, "vigil_ring_decode_errors_total"), 0);
    assert_eq!(value(&text, "vigil_ring_buffer_size_bytes"), 8_388_608);
    for sensor in ["process", "network", "file"] {
        assert_eq!(
            value(
                &text,
                &format!("vigil_lost_records_total{{sensor=\"{sensor}\"}}")
            ),
            0
        );
    }
    // Every kernel event of a session is attributed.
    assert_eq!(value(&text, "vigil_unattributed_events_total"), 0);
    assert!(value(&text, "vigil_attributed_events_total") >= kernel_events as u64);
    let coverage = sample(&text, "vigil_attribution_coverage_ratio").expect("coverage");
    assert!((coverage - 1.0).abs() < 1e-9, "coverage {coverage}");
    assert_eq!(value(&text, "vigil_events_without_pod_identity_total"), 0);
    assert!(value(&text, "vigil_scope_evaluation_seconds_count") >= kernel_events as u64);
    assert!(value(&text, "vigil_delivery_latency_seconds_count") >= kernel_events as u64);
    let newest = events
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap();
    assert_eq!(value(&text, "vigil_journal_newest_sequence"), newest);
    assert!(value(&text, "vigil_journal_size_bytes") > 0);
    assert_eq!(value(&text, "vigil_subscribers"), 0);
    assert_eq!(value(&text, "vigil_config_reloads_total"), 0);
    assert_eq!(value(&text, "vigil_config_reload_failures_total"), 0);
    assert_eq!(value(&text, "vigil_revocations_total"), 0);
    assert_eq!(value(&text, "vigil_revocations_active"), 0);
    assert_eq!(value(&text, "vigil_kubernetes_api_up"), 0);
    assert_eq!(value(&text, "vigil_watched_cgroups"), 0);

    // A subscriber is counted while connected.
    let api = d.api();
    let _stream = api
        .subscribe(pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::Now(true)),
            filter: None,
        })
        .expect("subscribe");
    wait_metric(port, "vigil_subscribers", 1);

    // A rejected reload, then an accepted one.
    replace_config(&d, &d.full_config("[[agent]]\nname = \"broken\"\n"));
    wait_metric(port, "vigil_config_reload_failures_total", 1);
    replace_config(&d, &d.full_config(&config(port, 2)));
    wait_metric(port, "vigil_config_reloads_total", 1);
    wait_metric(port, "vigil_config_version", 2);

    // A revocation is journaled and active.
    let out = d.vigil(&["revoke", "coder", "--reason", "metrics test"]);
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    wait_metric(port, "vigil_revocations_total", 1);
    wait_metric(port, "vigil_revocations_active", 1);
}

fn wait_metric(port: u16, series: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape_port(port);
        if count(&text, series) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never became {want}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Swaps the config file whole, as a `ConfigMap` update does, so the reload
/// never sees a half-written file.
fn replace_config(d: &Daemon, text: &str) {
    let tmp = d.config_path.with_extension("toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &d.config_path).unwrap();
}
