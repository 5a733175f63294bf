//! `[[export]]` sinks: the daemon itself delivers the journal to
//! collectors, each sink from its own cursor with the resume contract of a
//! subscriber, so a SIEM pipeline needs no client of Vigil's API.
//!
//! [`Exports`] runs one task per sink ([`sink::run`]), applies reloaded
//! configs (a changed sink restarts from its saved cursor), and reports
//! each sink's position, lag, retries and last error for `vigil status`
//! and Prometheus.

pub mod cursor;
pub mod otlp;
pub mod sink;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;

use crate::config::{ExportConfig, ExportFormat};
use crate::journal::Hub;

/// What one sink has done, shared by its task and the status readers.
#[derive(Debug)]
pub struct SinkState {
    /// Every event up to this sequence was acknowledged (or filtered out).
    acked: AtomicU64,
    exported: AtomicU64,
    retries: AtomicU64,
    rejected: AtomicU64,
    skipped: AtomicU64,
    failing: AtomicBool,
    notes: Mutex<Notes>,
}

#[derive(Debug, Default)]
struct Notes {
    /// Why the last request (or set-up) failed; cleared by a success.
    error: Option<String>,
    /// The last thing worth an operator's attention that did not stop delivery.
    warning: Option<String>,
    last_success: Option<SystemTime>,
}

impl SinkState {
    fn new() -> Self {
        Self {
            acked: AtomicU64::new(0),
            exported: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            notes: Mutex::default(),
        }
    }

    fn notes(&self) -> std::sync::MutexGuard<'_, Notes> {
        self.notes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self, error: String) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!("export: {error}");
        }
        self.notes().error = Some(error);
    }

    fn warn(&self, warning: String) {
        tracing::warn!("export: {warning}");
        self.notes().warning = Some(warning);
    }

    fn succeeded(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("export: delivering again");
        }
        let mut notes = self.notes();
        notes.error = None;
        notes.last_success = Some(SystemTime::now());
    }
}

/// One sink as `vigil status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkStatus {
    pub name: String,
    pub kind: &'static str,
    pub endpoint: String,
    pub format: ExportFormat,
    /// Journal sequence up to which the collector has everything.
    pub position: u64,
    /// Journaled events after the position.
    pub lag: u64,
    pub exported: u64,
    pub retries: u64,
    /// Records the collector refused as invalid.
    pub rejected: u64,
    /// Journaled events this sink could not convert.
    pub skipped: u64,
    /// The last request failed and is being retried.
    pub failing: bool,
    pub error: Option<String>,
    pub warning: Option<String>,
    pub last_success: Option<SystemTime>,
}

struct Running {
    config: ExportConfig,
    state: Arc<SinkState>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // The cursor is saved after every acknowledgement, so stopping the
        // task anywhere loses nothing.
        self.task.abort();
    }
}

/// The running sinks. Cheap to clone; every clone controls the same sinks.
#[derive(Clone)]
pub struct Exports {
    hub: Hub,
    node: String,
    /// Where the cursor files are (`<state_dir>/export`).
    dir: PathBuf,
    running: Arc<Mutex<BTreeMap<String, Running>>>,
}

impl std::fmt::Debug for Exports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exports")
            .field("dir", &self.dir)
            .field("sinks", &self.status().len())
            .finish_non_exhaustive()
    }
}

impl Exports {
    /// No sinks yet; [`Exports::apply`] starts them.
    #[must_use]
    pub fn new(hub: Hub, node: String, dir: PathBuf) -> Self {
        Self {
            hub,
            node,
            dir,
            running: Arc::default(),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the running sinks those of `configs`: new ones start, removed
    /// ones stop, changed ones restart from their cursor. Must be called on
    /// the runtime.
    pub fn apply(&self, configs: &[ExportConfig]) {
        let mut running = self.running();
        running.retain(|name, r| {
            let keep = configs
                .iter()
                .any(|c| c.name.as_str() == name && *c == r.config);
            if !keep {
                tracing::info!("export {name}: stopped");
            }
            keep
        });
        for config in configs {
            let name = config.name.as_str();
            if running.contains_key(name) {
                continue;
            }
            let state = Arc::new(SinkState::new());
            let parts = sink::Parts {
                hub: self.hub.clone(),
                node: self.node.clone(),
                cursor: cursor::Cursor::new(&self.dir, name),
                state: Arc::clone(&state),
                configured_at: self.hub.last_seq(),
            };
            tracing::info!(
                "export {name}: {} to {} ({} bodies)",
                config.kind.as_str(),
                config.endpoint,
                config.format.as_str()
            );
            let task = tokio::spawn(sink::run(config.clone(), parts));
            running.insert(
                name.to_owned(),
                Running {
                    config: config.clone(),
                    state,
                    task,
                },
            );
        }
    }

    /// Every sink, by name.
    #[must_use]
    pub fn status(&self) -> Vec<SinkStatus> {
        let newest = self.hub.last_seq();
        self.running()
            .iter()
            .map(|(name, r)| {
                let s = &r.state;
                let position = s.acked.load(Ordering::Relaxed);
                let notes = s.notes();
                SinkStatus {
                    name: name.clone(),
                    kind: r.config.kind.as_str(),
                    endpoint: r.config.endpoint.clone(),
                    format: r.config.format,
                    position,
                    lag: newest.saturating_sub(position),
                    exported: s.exported.load(Ordering::Relaxed),
                    retries: s.retries.load(Ordering::Relaxed),
                    rejected: s.rejected.load(Ordering::Relaxed),
                    skipped: s.skipped.load(Ordering::Relaxed),
                    failing: s.failing.load(Ordering::Relaxed),
                    error: notes.error.clone(),
                    warning: notes.warning.clone(),
                    last_success: notes.last_success,
                }
            })
            .collect()
    }

    /// Gives the sinks that are delivering up to `within` to send what is
    /// journaled, then stops every sink.
    pub async fn stop(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline && self.status().iter().any(|s| s.lag > 0 && !s.failing) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.running().clear();
    }
}

impl prometheus_client::collector::Collector for Exports {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use crate::metrics::{labelled_counters, labelled_gauges};
        let sinks = self.status();
        let by = |f: fn(&SinkStatus) -> u64| sinks.iter().map(move |s| (s.name.as_str(), f(s)));
        labelled_gauges(
            &mut enc,
            "export_lag_events",
            "Journaled events a sink has not delivered yet",
            "sink",
            by(|s| s.lag),
        )?;
        labelled_gauges(
            &mut enc,
            "export_position",
            "Journal sequence up to which a sink's collector has every event",
            "sink",
            by(|s| s.position),
        )?;
        labelled_gauges(
            &mut enc,
            "export_failing",
            "1 while a sink's requests fail and are retried",
            "sink",
            by(|s| u64::from(s.failing)),
        )?;
        labelled_counters(
            &mut enc,
            "export_records",
            "Log records a sink's collector accepted",
            "sink",
            by(|s| s.exported),
        )?;
        labelled_counters(
            &mut enc,
            "export_retries",
            "Export requests that failed and were sent again",
            "sink",
            by(|s| s.retries),
        )?;
        labelled_counters(
            &mut enc,
            "export_rejected",
            "Log records a sink's collector refused as invalid",
            "sink",
            by(|s| s.rejected),
        )?;
        labelled_counters(
            &mut enc,
            "export_skipped",
            "Journaled events a sink could not convert",
            "sink",
            by(|s| s.skipped),
        )
    }
}
