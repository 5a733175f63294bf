//! `vigil run`: wires sensors, identity, scope, outputs and the API together.

pub mod pipeline;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use crate::{
    config::{EventsOutput, live::LiveConfig},
    event::{Event, Identity, Loss, Payload},
    identity::cgroup::CgroupFs,
    output::JsonLines,
    sensors::{SensorOptions, Sensors},
    session::SessionManager,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Sensors(#[from] crate::sensors::SensorError),
    #[error("cgroup v2: {0}")]
    Cgroup(#[from] crate::identity::cgroup::CgroupError),
    #[error("session parent cgroup: {0}")]
    Session(#[from] crate::session::SessionError),
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    #[error("API: {0}")]
    Api(String),
    #[error("event ring buffer: {0}")]
    Ring(#[source] std::io::Error),
}

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
    /// Anomalies reported (after aggregation).
    pub anomalies: AtomicU64,
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

/// State shared by the pipeline, the API and background tasks.
pub struct Shared {
    pub node: String,
    pub started: SystemTime,
    pub live: Arc<LiveConfig>,
    pub sessions: SessionManager,
    pub sensors: Sensors,
    pub stats: Stats,
    /// Events made by the daemon (session start, loss, …) for the pipeline's outputs.
    pub side_events: mpsc::UnboundedSender<Event>,
    /// New cgroups the pipeline should know by id without a rescan.
    pub new_cgroups: mpsc::UnboundedSender<(u64, String)>,
}

impl Shared {
    /// Hands a daemon-made event to the outputs.
    pub fn emit(&self, event: Event) {
        let _ = self.side_events.send(event);
    }
}

/// A daemon-made event with the current time and no process.
#[must_use]
pub fn daemon_event(identity: Identity, payload: Payload) -> Event {
    Event {
        seq: 0,
        time: crate::event::format_time(SystemTime::now()),
        kernel_ts_ns: 0,
        identity,
        process: None,
        payload,
    }
}

fn node_name(configured: Option<&str>) -> String {
    configured.map_or_else(
        || {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "unknown".to_owned())
        },
        str::to_owned,
    )
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(config_path: Option<PathBuf>) -> Result<(), DaemonError> {
    let live = Arc::new(match &config_path {
        Some(p) => LiveConfig::load(p)?,
        None => LiveConfig::embedded()?,
    });
    let loaded = live.current();
    let cfg = &loaded.config;
    let cgroups = CgroupFs::discover()?;
    let sessions = SessionManager::new(cgroups.clone(), cfg.daemon.cgroup_parent.as_str())?;
    let sensors = Sensors::load(&SensorOptions {
        cgroup_mount: cgroups.mount.clone(),
        session_parent: Some(sessions.parent_id_level()),
        watch_all: cfg.daemon.watch_all,
        ring_buffer_bytes: cfg.daemon.ring_buffer_bytes as u32,
    })?;
    let mut sensors = sensors;
    let ring = sensors.take_events()?;
    for hook in sensors.attached() {
        tracing::info!("sensor attached: {hook}");
    }
    tracing::info!(
        "watching sessions under {}{} (cgroup id {})",
        cgroups.mount.display(),
        sessions.parent(),
        sessions.parent_id_level().0
    );
    let mut output = match &cfg.output.events {
        EventsOutput::Stdout => JsonLines::stdout(cfg.output.anomalies_only),
        EventsOutput::None => JsonLines::none(),
        EventsOutput::File(p) => JsonLines::file(p.as_path(), cfg.output.anomalies_only)?,
    };
    let (side_tx, mut side_rx) = mpsc::unbounded_channel();
    let (cg_tx, mut cg_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        node: node_name(cfg.daemon.node_name.as_deref()),
        started: SystemTime::now(),
        live: Arc::clone(&live),
        sessions,
        sensors,
        stats: Stats::default(),
        side_events: side_tx,
        new_cgroups: cg_tx,
    });
    let socket = cfg.daemon.socket.clone();
    let socket_group = cfg.daemon.socket_group.clone();
    drop(loaded);

    let api = crate::api::server::serve_unix(Arc::clone(&shared), socket.clone(), socket_group)
        .await
        .map_err(|e| DaemonError::Api(e.to_string()))?;
    tracing::info!("API listening on {}", socket.display());
    // Reload on file change and SIGHUP; the watcher stops when dropped.
    let _watcher = match &config_path {
        Some(path) => match crate::config::live::spawn_watcher(Arc::clone(&live), path.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("config hot reload disabled: {e}");
                None
            }
        },
        None => None,
    };
    tokio::spawn(housekeeping(Arc::clone(&shared)));

    let mut pipeline = pipeline::Pipeline::new(Arc::clone(&shared), &cgroups);
    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd lives.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| DaemonError::Ring(e.into()))?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(DaemonError::Ring)?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(DaemonError::Ring)?;
                drain(guard.get_inner_mut(), &mut pipeline, &mut output)?;
                guard.clear_ready();
            }
            Some(event) = side_rx.recv() => {
                output.write(&event)?;
                while let Ok(event) = side_rx.try_recv() {
                    output.write(&event)?;
                }
                output.flush()?;
            }
            Some((id, path)) = cg_rx.recv() => pipeline.learn_cgroup(id, &path),
            _ = tick.tick() => pipeline.tick(),
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    tracing::info!("shutting down");
    // Whatever the kernel delivered before the signal still goes out.
    drain(ring.get_mut(), &mut pipeline, &mut output)?;
    api.abort();
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Reads every record available now, then flushes the outputs once.
fn drain(
    ring: &mut RingBuf<MapData>,
    pipeline: &mut pipeline::Pipeline,
    output: &mut JsonLines,
) -> Result<(), DaemonError> {
    while let Some(item) = ring.next() {
        let result = pipeline.process_bytes(&item);
        drop(item);
        if let Some(out) = result {
            output.write(&out.event)?;
            for a in &out.anomalies {
                output.write(a)?;
            }
        }
    }
    output.flush()?;
    Ok(())
}

/// Periodic work off the hot path: loss counters, session reaping.
async fn housekeeping(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        match shared.sensors.loss() {
            Ok(counters) => {
                for (i, (sensor, total)) in counters.into_iter().enumerate() {
                    let before = shared.stats.lost[i].swap(total, Ordering::Relaxed);
                    if total > before {
                        tracing::warn!(
                            "{} kernel records of the {sensor} sensor lost (ring buffer full)",
                            total - before
                        );
                        shared.emit(daemon_event(
                            Identity::default(),
                            Payload::Loss(Loss {
                                sensor: sensor.to_owned(),
                                lost: total - before,
                                total,
                            }),
                        ));
                    }
                }
            }
            Err(e) => tracing::warn!("reading loss counters: {e}"),
        }
        for s in shared.sessions.reap() {
            tracing::info!("session {} of agent {} ended", s.session, s.agent);
        }
    }
}
