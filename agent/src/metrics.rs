//! The Prometheus endpoint (`[metrics] listen`): `GET /metrics` in the
//! `OpenMetrics` text format.
//!
//! Counters of what was published (events by kind, anomalies by kind and
//! agent) and the latency histograms are kept here ([`Metrics`]) and updated
//! on the hot path; everything the daemon already counts elsewhere (loss,
//! journal, subscribers, coverage, reloads, pod identity) is read at scrape
//! time by a collector its owner registers, so there is one source of truth
//! for each figure. This module depends on nothing but the event model.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

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

impl Metrics {
    /// Registers these live counters and histograms.
    pub fn register(&self, r: &mut Registry) {
        r.register("events", "Events journaled, by kind", self.events.clone());
        r.register(
            "anomalies",
            "Anomalies reported, by kind and agent (empty: no agent)",
            self.anomalies.clone(),
        );
        r.register(
            "revocations",
            "Revocations journaled since start",
            self.revocations.clone(),
        );
        r.register_with_unit(
            "scope_evaluation",
            "Time to compare one event with its agent's scope",
            Unit::Seconds,
            self.scope_evaluation.clone(),
        );
        r.register_with_unit(
            "delivery_latency",
            "Time from the kernel hook to the journal, per kernel event",
            Unit::Seconds,
            self.delivery.clone(),
        );
    }
}

/// The registry of the endpoint, prefixed `vigil_`. Each owner of figures
/// registers its [`Collector`](prometheus_client::collector::Collector)
/// once at start-up; collectors read their figures at scrape time, so each
/// has one source of truth.
#[must_use]
pub fn registry() -> Registry {
    Registry::with_prefix("vigil")
}

/// Encodes one counter read at scrape time.
pub fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    ConstCounter::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// Encodes one gauge read at scrape time.
pub fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(enc.encode_descriptor(
        name,
        help,
        None,
        MetricType::Gauge,
    )?)
}

/// Encodes one gauge with a unit.
pub fn gauge_with_unit(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: &Unit,
    value: u64,
) -> std::fmt::Result {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(enc.encode_descriptor(
        name,
        help,
        Some(unit),
        MetricType::Gauge,
    )?)
}

/// Encodes one floating-point gauge.
pub fn gauge_f64(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> std::fmt::Result {
    ConstGauge::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// Encodes a counter per value of one label.
pub fn labelled_counters<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> std::fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (l, v) in values {
        let labels = [(label, l)];
        ConstCounter::new(v).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes a gauge per value of one label.
pub fn labelled_gauges<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> std::fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (l, v) in values {
        let labels = [(label, l)];
        ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
            .encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

async fn scrape(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut out = String::new();
    // Writing to a String cannot fail; a collector's error leaves a partial page.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!("encoding metrics: {e}");
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], out)
}

/// Serves `/metrics` on `addr` until the task is aborted.
pub async fn serve(
    registry: Arc<Registry>,
    addr: SocketAddr,
) -> Result<tokio::task::JoinHandle<()>, MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(registry);
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
