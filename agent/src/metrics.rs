//! The Prometheus endpoint (`[metrics] listen`): `GET /metrics` in the
//! `OpenMetrics` text format.
//!
//! Counters of what was published (events by kind, anomalies by kind and
//! agent) and the latency histograms are kept here and updated on the hot
//! path; everything the daemon already counts elsewhere (loss, journal,
//! subscribers, coverage, reloads, pod identity) is read at scrape time, so
//! there is one source of truth for each figure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::daemon::Shared;
use crate::event::{Event, Payload};

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics listener on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnomalyLabels {
    kind: String,
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SensorLabel {
    sensor: String,
}

/// What is counted as it happens.
#[derive(Debug)]
pub struct Metrics {
    events: Family<KindLabel, Counter>,
    anomalies: Family<AnomalyLabels, Counter>,
    revocations: Counter,
    scope_evaluation: Histogram,
    delivery: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            events: Family::default(),
            anomalies: Family::default(),
            revocations: Counter::default(),
            // 0.5 µs .. about 2 ms: an in-scope verdict takes about a microsecond.
            scope_evaluation: Histogram::new(exponential_buckets(5e-7, 2.0, 13)),
            // 100 µs .. about 26 s: kernel to journal, through batching.
            delivery: Histogram::new(exponential_buckets(1e-4, 4.0, 10)),
        }
    }
}

/// `CLOCK_BOOTTIME` now, in nanoseconds: the clock of `kernel_ts_ns`.
fn boottime_ns() -> Option<u64> {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    u64::try_from(ts.tv_sec())
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(u64::try_from(ts.tv_nsec()).ok()?)
}

impl Metrics {
    /// Counts journaled events; called once per commit.
    pub fn observe_published(&self, events: &[Event]) {
        let now = boottime_ns();
        // One label lookup per kind and batch, not per event.
        let mut kinds: Vec<(&'static str, u64)> = Vec::new();
        for e in events {
            let kind = e.payload.kind();
            match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => kinds.push((kind, 1)),
            }
            match &e.payload {
                Payload::Anomaly(a) => {
                    self.anomalies
                        .get_or_create(&AnomalyLabels {
                            kind: a.anomaly.as_str().to_owned(),
                            agent: e.identity.agent.clone().unwrap_or_default(),
                        })
                        .inc();
                }
                Payload::Revocation(_) => {
                    self.revocations.inc();
                }
                _ => {}
            }
            if e.kernel_ts_ns != 0
                && !matches!(e.payload, Payload::Anomaly(_))
                && let Some(now) = now
            {
                let ns = now.saturating_sub(e.kernel_ts_ns);
                self.delivery.observe(ns as f64 / 1e9);
            }
        }
        for (kind, n) in kinds {
            self.events
                .get_or_create(&KindLabel {
                    kind: kind.to_owned(),
                })
                .inc_by(n);
        }
    }

    /// Records how long one scope evaluation took.
    pub fn observe_scope_evaluation(&self, took: Duration) {
        self.scope_evaluation.observe(took.as_secs_f64());
    }
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

fn gauge(v: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    g
}

/// The whole exposition, read from the daemon's state now.
#[must_use]
pub fn render(shared: &Shared) -> String {
    let m = &shared.metrics;
    let stats = &shared.stats;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut r = Registry::with_prefix("vigil");
    r.register("events", "Events journaled, by kind", m.events.clone());
    r.register(
        "anomalies",
        "Anomalies reported, by kind and agent (empty: no agent)",
        m.anomalies.clone(),
    );
    r.register(
        "revocations",
        "Revocations journaled since start",
        m.revocations.clone(),
    );
    r.register(
        "sensor_tampers",
        "Pins under pin_dir removed or replaced, and links detached, while the daemon ran",
        counter(shared.sensors.tampers()),
    );
    r.register(
        "sensor_programs_detached",
        "Links of the daemon the kernel reports detached from their hooks now",
        gauge(
            shared
                .sensors
                .programs()
                .iter()
                .filter(|p| !p.attached)
                .count() as u64,
        ),
    );
    r.register(
        "revocations_active",
        "Agents and sessions revoked now",
        gauge(shared.enforcer.revocations.list().len() as u64),
    );
    r.register_with_unit(
        "scope_evaluation",
        "Time to compare one event with its agent's scope",
        Unit::Seconds,
        m.scope_evaluation.clone(),
    );
    r.register_with_unit(
        "delivery_latency",
        "Time from the kernel hook to the journal, per kernel event",
        Unit::Seconds,
        m.delivery.clone(),
    );
    r.register(
        "ring_records_read",
        "Records read from the kernel ring buffer",
        counter(load(&stats.records)),
    );
    r.register(
        "ring_decode_errors",
        "Ring buffer records that failed to decode",
        counter(load(&stats.decode_errors)),
    );
    r.register_with_unit(
        "ring_buffer_size",
        "Size of the kernel ring buffer",
        Unit::Bytes,
        gauge(shared.live.current().config.daemon.ring_buffer_bytes),
    );
    let lost: Family<SensorLabel, Counter> = Family::default();
    for (i, name) in vigil_common::SENSOR_NAMES.iter().enumerate() {
        lost.get_or_create(&SensorLabel {
            sensor: (*name).to_owned(),
        })
        .inc_by(load(&stats.lost[i]));
    }
    r.register(
        "lost_records",
        "Kernel records lost because the ring buffer was full, per sensor",
        lost,
    );
    r.register(
        "attributed_events",
        "Events attributed to an agent",
        counter(load(&stats.attributed)),
    );
    r.register(
        "unattributed_events",
        "Events of watched processes that no agent matched",
        counter(load(&stats.unattributed)),
    );
    r.register(
        "file_open_repeat_keys",
        "Repeated-open counters of the kernel the daemon tracks, as of its last sweep",
        gauge(load(&stats.open_repeat_keys)),
    );
    r.register(
        "events_without_pod_identity",
        "Events of pod containers that went out without pod metadata",
        counter(load(&stats.without_pod_identity)),
    );
    let coverage: Gauge<f64, AtomicU64> = Gauge::default();
    coverage.set(stats.coverage());
    r.register(
        "attribution_coverage_ratio",
        "Attributed events / events of watched processes",
        coverage,
    );
    let hub = shared.hub.stats();
    r.register_with_unit(
        "journal_size",
        "Size of the journal file",
        Unit::Bytes,
        gauge(hub.journal.size_bytes),
    );
    r.register(
        "journal_newest_sequence",
        "Sequence of the newest journaled event",
        gauge(hub.journal.last_seq),
    );
    r.register(
        "journal_pruned_events",
        "Events removed by journal retention",
        counter(hub.journal.pruned_events),
    );
    r.register(
        "subscribers",
        "Event stream subscribers connected",
        gauge(hub.subscribers as u64),
    );
    r.register(
        "subscriber_gaps",
        "Gap events sent to subscribers that fell behind retention",
        counter(hub.gaps_sent),
    );
    let (live, _) = shared.live.status();
    r.register(
        "config_reloads",
        "Config reloads accepted",
        counter(live.reloads),
    );
    r.register(
        "config_reload_failures",
        "Config reloads rejected",
        counter(live.failures),
    );
    r.register(
        "config_version",
        "Version of the config in force (1 at start)",
        gauge(shared.live.version()),
    );
    let kube = &shared.kube;
    let kc = kube.counters();
    r.register(
        "kubernetes_api_up",
        "1 when the pod list is loaded and the watch runs, else 0",
        gauge(u64::from(kube.up())),
    );
    r.register(
        "kubernetes_pods",
        "Pods of this node known",
        gauge(kube.index().len() as u64),
    );
    r.register(
        "kubernetes_held_events",
        "Events held back, waiting for their pod's metadata",
        gauge(load(&kc.held)),
    );
    r.register(
        "kubernetes_speculative_dropped_events",
        "Events of containers watched while their pod was unknown, dropped because no agent selects the pod",
        counter(load(&kc.speculative_dropped)),
    );
    r.register(
        "kubernetes_watch_failures",
        "Failures of the pod watch",
        counter(load(&kc.watch_failures)),
    );
    r.register(
        "watched_cgroups",
        "cgroups watched by match.cgroups and match.kubernetes",
        gauge(load(&kc.watched_cgroups)),
    );
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    out
}

async fn scrape(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&shared))
}

/// Serves `/metrics` on `addr` until the task is aborted.
pub async fn serve(
    shared: Arc<Shared>,
    addr: SocketAddr,
) -> Result<tokio::task::JoinHandle<()>, MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(shared);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics endpoint stopped: {e}");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Anomaly, AnomalyKind, Exit, Identity, Severity};

    fn event(payload: Payload, agent: Option<&str>, ts: u64) -> Event {
        Event {
            seq: 0,
            time: std::time::SystemTime::UNIX_EPOCH,
            kernel_ts_ns: ts,
            identity: Identity {
                agent: agent.map(str::to_owned),
                ..Identity::default()
            },
            process: None,
            payload,
        }
    }

    fn encode(m: &Metrics) -> String {
        let mut r = Registry::with_prefix("vigil");
        r.register("events", "", m.events.clone());
        r.register("anomalies", "", m.anomalies.clone());
        r.register_with_unit("delivery_latency", "", Unit::Seconds, m.delivery.clone());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        out
    }

    #[test]
    fn counts_published_events_by_kind_and_anomalies_by_agent() {
        let m = Metrics::default();
        let exit = Payload::Exit(Exit {
            code: Some(0),
            signal: None,
        });
        let offending = event(exit.clone(), Some("coder"), 1);
        let anomaly = Payload::Anomaly(Anomaly {
            anomaly: AnomalyKind::UnapprovedTool,
            severity: Severity::High,
            reason: "r".into(),
            identity_name: None,
            count: 1,
            action: "observed".into(),
            offending: Box::new(offending),
        });
        let now = boottime_ns().unwrap();
        m.observe_published(&[
            event(exit.clone(), Some("coder"), now),
            event(exit, None, 0),
            event(anomaly, Some("coder"), now),
        ]);
        let text = encode(&m);
        assert!(
            text.contains("vigil_events_total{kind=\"exit\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("vigil_events_total{kind=\"anomaly\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vigil_anomalies_total{kind=\"unapproved_tool\",agent=\"coder\"} 1"),
            "{text}"
        );
        // Only the kernel event (not the daemon's, not the anomaly) has a latency.
        assert!(
            text.contains("vigil_delivery_latency_seconds_count 1"),
            "{text}"
        );
    }
}
