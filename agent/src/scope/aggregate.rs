//! Folding of repeated anomalies. An agent stuck in a loop can break the
//! same rule thousands of times a second; the stream must stay readable
//! without losing any of it. The first anomaly of a kind is reported at
//! once; identical ones (same agent, session, kind and reason) within the
//! window are counted and reported once when the window closes, with their
//! count and the last offending event.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::event::{Anomaly, AnomalyKind};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    agent: Option<String>,
    session: Option<String>,
    kind: AnomalyKind,
    reason: String,
}

impl Key {
    fn of(a: &Anomaly) -> Self {
        Self {
            agent: a.offending.identity.agent.clone(),
            session: a.offending.identity.session.clone(),
            kind: a.anomaly,
            reason: a.reason.clone(),
        }
    }
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    /// The latest repeat, with `count` holding all repeats so far.
    folded: Option<Anomaly>,
}

#[derive(Debug)]
pub struct Aggregator {
    window: Duration,
    open: HashMap<Key, Window>,
}

impl Aggregator {
    /// A zero window reports every anomaly on its own.
    #[must_use]
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            open: HashMap::new(),
        }
    }

    #[must_use]
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Takes an anomaly; returns what must be reported now: the anomaly
    /// itself when it opens a window, nothing when it is folded into an open
    /// one, and also the folded report of a window that had closed.
    pub fn observe(&mut self, anomaly: Anomaly, now: Instant) -> Vec<Anomaly> {
        if self.window.is_zero() {
            return vec![anomaly];
        }
        let key = Key::of(&anomaly);
        let mut out = Vec::new();
        if let Some(w) = self.open.get_mut(&key) {
            if now.saturating_duration_since(w.opened) < self.window {
                let repeats = w.folded.as_ref().map_or(0, |f| f.count) + anomaly.count.max(1);
                w.folded = Some(Anomaly {
                    count: repeats,
                    ..anomaly
                });
                return out;
            }
            out.extend(self.open.remove(&key).and_then(|w| w.folded));
        }
        self.open.insert(
            key,
            Window {
                opened: now,
                folded: None,
            },
        );
        out.push(anomaly);
        out
    }

    /// Closes every window older than the aggregation window and returns
    /// the folded reports of those that saw repeats.
    pub fn flush(&mut self, now: Instant) -> Vec<Anomaly> {
        let mut out = Vec::new();
        self.open.retain(|_, w| {
            if now.saturating_duration_since(w.opened) < self.window {
                return true;
            }
            out.extend(w.folded.take());
            false
        });
        out
    }

    /// Closes every window regardless of age (at shutdown).
    pub fn drain(&mut self) -> Vec<Anomaly> {
        self.open.drain().filter_map(|(_, w)| w.folded).collect()
    }

    /// When the oldest open window closes: the time of the next useful `flush`.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.values().map(|w| w.opened + self.window).min()
    }

    /// Number of open windows.
    #[must_use]
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Exit, Identity, Payload, Severity};

    fn anomaly(agent: &str, session: &str, reason: &str, seq: u64) -> Anomaly {
        Anomaly {
            anomaly: AnomalyKind::UnapprovedSystem,
            severity: Severity::High,
            reason: reason.into(),
            identity_name: None,
            count: 1,
            action: "observed".into(),
            offending: Box::new(Event {
                seq,
                time: std::time::SystemTime::UNIX_EPOCH,
                kernel_ts_ns: 0,
                identity: Identity {
                    agent: Some(agent.into()),
                    session: Some(session.into()),
                    ..Identity::default()
                },
                process: None,
                payload: Payload::Exit(Exit {
                    code: Some(0),
                    signal: None,
                }),
            }),
        }
    }

    #[test]
    fn first_at_once_repeats_folded_with_count() {
        let w = Duration::from_secs(10);
        let mut agg = Aggregator::new(w);
        let t0 = Instant::now();
        let first = agg.observe(anomaly("a", "s", "r", 1), t0);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].count, 1);
        for i in 2..=5 {
            assert!(
                agg.observe(anomaly("a", "s", "r", i), t0 + Duration::from_secs(1))
                    .is_empty()
            );
        }
        assert!(
            agg.flush(t0 + Duration::from_secs(9)).is_empty(),
            "window still open"
        );
        assert_eq!(agg.next_deadline(), Some(t0 + w));
        let folded = agg.flush(t0 + w);
        assert_eq!(folded.len(), 1);
        assert_eq!(folded[0].count, 4);
        assert_eq!(folded[0].offending.seq, 5, "carries the last repeat");
        assert_eq!(agg.open_windows(), 0);
        // After the window, the next one is a new first report.
        assert_eq!(agg.observe(anomaly("a", "s", "r", 6), t0 + w).len(), 1);
    }

    #[test]
    fn different_keys_are_not_folded() {
        let mut agg = Aggregator::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(agg.observe(anomaly("a", "s", "r", 1), t0).len(), 1);
        assert_eq!(agg.observe(anomaly("b", "s", "r", 2), t0).len(), 1);
        assert_eq!(agg.observe(anomaly("a", "s2", "r", 3), t0).len(), 1);
        assert_eq!(agg.observe(anomaly("a", "s", "other", 4), t0).len(), 1);
        let mut tool = anomaly("a", "s", "r", 5);
        tool.anomaly = AnomalyKind::UnapprovedTool;
        assert_eq!(agg.observe(tool, t0).len(), 1);
        assert!(
            agg.flush(t0 + Duration::from_secs(10)).is_empty(),
            "no repeats, nothing more"
        );
    }

    #[test]
    fn late_repeat_reports_the_closed_window_and_itself() {
        let mut agg = Aggregator::new(Duration::from_secs(10));
        let t0 = Instant::now();
        agg.observe(anomaly("a", "s", "r", 1), t0);
        agg.observe(anomaly("a", "s", "r", 2), t0);
        let out = agg.observe(anomaly("a", "s", "r", 3), t0 + Duration::from_secs(11));
        assert_eq!(
            out.iter()
                .map(|a| (a.count, a.offending.seq))
                .collect::<Vec<_>>(),
            vec![(1, 2), (1, 3)]
        );
    }

    #[test]
    fn nothing_is_dropped() {
        let mut agg = Aggregator::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let mut reported = 0;
        for i in 0..1000u64 {
            let at = t0 + Duration::from_millis(i * 37);
            for a in agg.observe(anomaly("a", "s", "r", i), at) {
                reported += a.count;
            }
            for a in agg.flush(at) {
                reported += a.count;
            }
        }
        for a in agg.drain() {
            reported += a.count;
        }
        assert_eq!(reported, 1000);
    }

    #[test]
    fn zero_window_reports_everything() {
        let mut agg = Aggregator::new(Duration::ZERO);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(agg.observe(anomaly("a", "s", "r", i), t0).len(), 1);
        }
        assert_eq!(agg.open_windows(), 0);
    }
}
