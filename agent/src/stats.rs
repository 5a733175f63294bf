//! The pipeline's counters: records read and decoded, events made,
//! attributed and reported. The pipeline writes them on its one thread;
//! `vigil status` and the Prometheus endpoint read them at any time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters the daemon keeps and exposes (status API, loss events).
#[derive(Debug, Default)]
pub struct Stats {
    /// Records read from the ring buffer.
    pub records: AtomicU64,
    /// Records that failed to decode (counted, skipped).
    pub decode_errors: AtomicU64,
    /// Events produced from kernel records.
    pub events: AtomicU64,
    /// Events attributed to an agent.
    pub attributed: AtomicU64,
    /// Events from watched processes that no agent matched.
    pub unattributed: AtomicU64,
    /// Events of pod containers that went out without pod metadata.
    pub without_pod_identity: AtomicU64,
    /// Anomalies reported (after aggregation).
    pub anomalies: AtomicU64,
    /// Repeated-open keys the daemon tracks, as of the last sweep (bounded
    /// by the kernel's `OPEN_SEEN` capacity, see `daemon::repeats`).
    pub open_repeat_keys: AtomicU64,
    /// Kernel records lost, per sensor, as last read.
    pub lost: [AtomicU64; vigil_common::SENSOR_COUNT as usize],
}

impl Stats {
    /// Attributed events / events from watched processes (1.0 with no events).
    pub fn coverage(&self) -> f64 {
        let a = self.attributed.load(Ordering::Relaxed);
        let u = self.unattributed.load(Ordering::Relaxed);
        if a + u == 0 {
            1.0
        } else {
            a as f64 / (a + u) as f64
        }
    }
}

impl prometheus_client::collector::Collector for Stats {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use crate::metrics::{counter, gauge, gauge_f64, labelled_counters};
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut enc,
            "ring_records_read",
            "Records read from the kernel ring buffer",
            load(&self.records),
        )?;
        counter(
            &mut enc,
            "ring_decode_errors",
            "Ring buffer records that failed to decode",
            load(&self.decode_errors),
        )?;
        labelled_counters(
            &mut enc,
            "lost_records",
            "Kernel records lost because the ring buffer was full, per sensor",
            "sensor",
            vigil_common::SENSOR_NAMES
                .iter()
                .zip(&self.lost)
                .map(|(name, n)| (*name, load(n))),
        )?;
        counter(
            &mut enc,
            "attributed_events",
            "Events attributed to an agent",
            load(&self.attributed),
        )?;
        counter(
            &mut enc,
            "unattributed_events",
            "Events of watched processes that no agent matched",
            load(&self.unattributed),
        )?;
        gauge(
            &mut enc,
            "file_open_repeat_keys",
            "Repeated-open counters of the kernel the daemon tracks, as of its last sweep",
            load(&self.open_repeat_keys),
        )?;
        counter(
            &mut enc,
            "events_without_pod_identity",
            "Events of pod containers that went out without pod metadata",
            load(&self.without_pod_identity),
        )?;
        gauge_f64(
            &mut enc,
            "attribution_coverage_ratio",
            "Attributed events / events of watched processes",
            self.coverage(),
        )
    }
}
