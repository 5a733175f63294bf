pub mod pipeline;
pub mod reader;
pub mod repeats;
pub mod watch;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::mpsc;

use crate::{
    api::{
        governance::Governance,
        node::{Node, NodeParts},
        server::Services,
    },
    config::{EventsOutput, OutputFormat},
    enforcement::{Enforcer, kernel::KernelPolicy},
    event::{Event, Identity, Payload},
    export::Exports,
    identity::cgroup::CgroupFs,
    journal::{
        Hub, HubConfig, Journal,
        counters::AgentCounters,
        publisher::{self, Publisher, Sinks},
    },
    kube::Kube,
    live::LiveConfig,
    metrics::Metrics,
    output::{Format, JsonLines},
    paths,
    scope::dns::DnsCache,
    sensors::{SensorOptions, SensorState, Sensors},
    session::SessionManager,
    stats::Stats,
};

/// How long the sinks that deliver get at shutdown to send what is journaled.
const EXPORT_DRAIN: Duration = Duration::from_secs(2);

/// How often retention is applied when nothing is published.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

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
    #[error("enforcement: {0}")]
    Enforcement(#[source] crate::enforcement::EnforceError),
    #[error("enforcement maps: {0}")]
    Kernel(#[from] crate::enforcement::kernel::KernelPolicyError),
    #[error("API: {0}")]
    Api(String),
    #[error("sensor reader: {0}")]
    Reader(#[from] reader::ReaderError),
    #[error("signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("event publisher: {0}")]
    Publisher(String),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

/// Runs the daemon until SIGINT or SIGTERM.
#[allow(clippy::too_many_lines)] // the one place that wires every part
pub async fn run(config_path: Option<PathBuf>) -> Result<(), DaemonError> {
    let live = Arc::new(match &config_path {
        Some(p) => LiveConfig::load(p)?,
        None => LiveConfig::embedded()?,
    });
    let loaded = live.current();
    let cfg = &loaded.config;
    let cgroups = CgroupFs::discover()?;
    let sessions = SessionManager::new(cgroups.clone(), cfg.daemon.cgroup_parent.as_str())?;
    let mut sensors = Sensors::load(&SensorOptions {
        cgroup_mount: cgroups.mount.clone(),
        session_parent: Some(sessions.parent_id_level()),
        watch_all: cfg.daemon.watch_all,
        ring_buffer_bytes: cfg.daemon.ring_buffer_bytes as u32,
        open_repeat: Duration::from_millis(u64::from(cfg.daemon.open_repeat_ms)),
        // The reader collects ordinary records every reader_interval_ms; a
        // quarter-full ring wakes it early.
        wake_bytes: if cfg.daemon.reader_interval_ms == 0 {
            0
        } else {
            (cfg.daemon.ring_buffer_bytes / 4) as u32
        },
        pin_dir: cfg.daemon.pin_dir.clone(),
        typed_reads: cfg.daemon.typed_reads,
    })?;
    // Each map goes to the one part that uses it.
    let ring = sensors.take_events()?;
    let open_seen = sensors.take_open_repeats()?;
    let losses = sensors.take_session_losses()?;
    let node_losses = sensors.take_node_losses()?;
    let watched = sensors.take_watched()?;
    let (policy_map, systems_map, unix_map) = sensors.take_policy_maps()?;
    let open_repeat = Duration::from_millis(u64::from(cfg.daemon.open_repeat_ms));
    for hook in sensors.attached() {
        tracing::info!("sensor attached: {hook}");
    }
    tracing::info!(
        "watching sessions under {}{} (cgroup id {})",
        cgroups.mount.display(),
        sessions.parent(),
        sessions.parent_id_level().0
    );
    let session_parent = sessions.parent().to_owned();
    let sensors = Arc::new(sensors);
    let enforcer = Arc::new(Enforcer::load(
        KernelPolicy::new(policy_map, systems_map, unix_map)?,
        sessions,
        &cfg.daemon.state_dir,
    ));
    // A configured name first, then the Kubernetes node's, then the host's.
    let node = match (&cfg.daemon.node_name, cfg.kubernetes.event_node_name()) {
        (None, Some(kube)) => kube,
        _ => cfg.daemon.node_name(),
    };
    let output = match &cfg.output.events {
        EventsOutput::Stdout => JsonLines::stdout(cfg.output.anomalies_only),
        EventsOutput::None => JsonLines::none(),
        EventsOutput::File(p) => JsonLines::file(p.as_path(), cfg.output.anomalies_only)?,
    }
    .with_format(match cfg.output.format {
        OutputFormat::Json => Format::Json,
        OutputFormat::Ocsf => Format::Ocsf { node: node.clone() },
    });
    let journal_path = cfg.journal.path_in(&cfg.daemon.state_dir);
    let journal = Journal::open(&journal_path, &node, cfg.journal.retention())?;
    let journal_stats = journal.stats();
    tracing::info!(
        "journal {}: {} bytes, sequences {}..={}",
        journal_path.display(),
        journal_stats.size_bytes,
        journal_stats.oldest_seq.unwrap_or(0),
        journal_stats.last_seq
    );
    let hub = Hub::new(
        journal,
        HubConfig {
            live_batches: publisher::LIVE_BATCHES,
            ..HubConfig::default()
        },
    );
    // Sinks start before anything is published, so `start = "now"` counts
    // from here.
    let exports = Exports::new(
        hub.clone(),
        node.clone(),
        cfg.daemon.state_dir.join(paths::EXPORT_DIR),
    );
    exports.apply(&cfg.exports);
    let (publisher, queue) = Publisher::channel(publisher::QUEUE_BATCHES);
    let (cg_tx, cg_rx) = mpsc::unbounded_channel();
    let kube = Kube::start(&cfg.kubernetes, &node);
    let stats = Arc::new(Stats::default());
    let counters = Arc::new(AgentCounters::default());
    let metrics = Arc::new(Metrics::default());
    // Kernel enforcement state: what a previous daemon left pinned is kept;
    // the registry is re-applied and every agent's settings loaded.
    enforcer.reapply();
    enforcer
        .configure(&loaded.scope)
        .map_err(DaemonError::Enforcement)?;
    let socket = cfg.daemon.socket.clone();
    let socket_group = cfg.daemon.socket_group.clone();
    let api_config = cfg.api.clone();
    let metrics_listen = cfg.metrics.listen;
    let reader_nice = i32::from(cfg.daemon.reader_nice);
    let reader_interval = Duration::from_millis(u64::from(cfg.daemon.reader_interval_ms));
    let guard_interval = Duration::from_millis(u64::from(cfg.daemon.guard_interval_ms));
    drop(loaded);
    let publishing = publisher::spawn(
        queue,
        Sinks {
            hub: hub.clone(),
            counters: Arc::clone(&counters),
            metrics: Arc::clone(&metrics),
            output,
        },
    )
    .map_err(|e| DaemonError::Publisher(format!("starting the journal thread: {e}")))?;
    let mut publishing = std::pin::pin!(publishing);

    let sensor_state: Arc<dyn SensorState> = Arc::clone(&sensors) as Arc<dyn SensorState>;
    let services = Services {
        live: Arc::clone(&live),
        hub: hub.clone(),
        governance: Governance::new(
            Arc::clone(&live),
            Arc::clone(&enforcer),
            publisher.clone(),
            Arc::clone(&counters),
            cg_tx.clone(),
        ),
        node: Node::new(NodeParts {
            node,
            started: SystemTime::now(),
            live: Arc::clone(&live),
            sensors: Arc::clone(&sensor_state),
            stats: Arc::clone(&stats),
            kube: kube.clone(),
            hub: hub.clone(),
            journal_path: journal_path.clone(),
            exports: exports.clone(),
        }),
    };
    let api = crate::api::server::serve_unix(services.clone(), socket.clone(), socket_group)
        .await
        .map_err(|e| DaemonError::Api(e.to_string()))?;
    tracing::info!("API listening on {}", socket.display());
    let tcp_api = match api_config.listen {
        Some(addr) => {
            let files = match (&api_config.cert, &api_config.key, &api_config.client_ca) {
                (Some(cert), Some(key), Some(client_ca)) if !api_config.insecure => {
                    Some(crate::api::tls::TlsFiles {
                        cert: cert.clone(),
                        key: key.clone(),
                        client_ca: client_ca.clone(),
                    })
                }
                _ => None,
            };
            Some(
                crate::api::tls::serve_tcp(services, addr, files)
                    .await
                    .map_err(|e| DaemonError::Api(e.to_string()))?,
            )
        }
        None => None,
    };
    tokio::spawn(follow_config(
        Arc::clone(&live),
        Arc::clone(&enforcer),
        hub.clone(),
        exports.clone(),
        journal_path.clone(),
    ));
    tokio::spawn(prune(hub.clone()));
    // Reload on file change and SIGHUP; the watcher stops when dropped.
    let _watcher = match &config_path {
        Some(path) => match crate::live::spawn_watcher(Arc::clone(&live), path.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("config hot reload disabled: {e}");
                None
            }
        },
        None => None,
    };
    tokio::spawn(housekeeping(Arc::clone(&enforcer)));
    tokio::spawn(guard(
        Arc::clone(&sensors),
        publisher.clone(),
        guard_interval,
    ));
    tokio::spawn(watch::run(watch::Parts {
        live: Arc::clone(&live),
        kube: kube.clone(),
        session_parent,
        watched,
        new_cgroups: cg_tx,
        mount: cgroups.mount.clone(),
    }));
    let metrics_task = match metrics_listen {
        Some(addr) => {
            let mut registry = crate::metrics::registry();
            metrics.register(&mut registry);
            registry.register_collector(Box::new(Arc::clone(&stats)));
            registry.register_collector(Box::new(crate::sensors::Figures(sensor_state)));
            registry
                .register_collector(Box::new(crate::enforcement::Figures(Arc::clone(&enforcer))));
            registry.register_collector(Box::new(hub.clone()));
            registry.register_collector(Box::new(exports.clone()));
            registry.register_collector(Box::new(Arc::clone(&live)));
            registry.register_collector(Box::new(kube.clone()));
            let task = crate::metrics::serve(Arc::new(registry), addr).await?;
            tracing::info!("metrics on http://{addr}/metrics");
            Some(task)
        }
        None => None,
    };

    // Host names of the agents' systems are resolved off the hot path.
    let dns = Arc::new(DnsCache::new());
    let scope_of = Arc::clone(&live);
    crate::scope::dns::spawn_resolver(Arc::clone(&dns), move || scope_of.scope());
    let pipeline = pipeline::Pipeline::new(
        pipeline::Parts {
            live: Arc::clone(&live),
            enforcer: Arc::clone(&enforcer),
            stats: Arc::clone(&stats),
            metrics: Arc::clone(&metrics),
            kube,
            dns,
            repeats: repeats::Repeats::new(Some(open_seen), open_repeat),
            node_losses: Some(node_losses),
            losses: Some(losses),
        },
        &cgroups,
    );
    let mut reader = reader::Reader::spawn(
        ring,
        pipeline,
        publisher.clone(),
        cg_rx,
        reader::Options {
            nice: reader_nice,
            interval: reader_interval,
        },
    )?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(DaemonError::Signal)?;
    tokio::select! {
        // The reader only ends early on an error; stop() reports it.
        () = reader.ended() => {}
        stopped = &mut publishing => return Err(publisher_stopped(stopped)),
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
    }
    tracing::info!("shutting down");
    // The reader drains what the kernel delivered and hands it on; blocking
    // for it here is fine, the publisher has a thread of its own.
    let stopped = tokio::task::block_in_place(|| reader.stop());
    publisher.stop().await;
    let published = publishing.await;
    // What the last batches journaled reaches the collectors that are up.
    exports.stop(EXPORT_DRAIN).await;
    api.abort();
    if let Some(m) = metrics_task {
        m.abort();
    }
    if let Some(tcp) = tcp_api {
        tcp.abort();
    }
    let _ = std::fs::remove_file(&socket);
    stopped?;
    match published {
        Some(Ok(())) => Ok(()),
        other => Err(publisher_stopped(other)),
    }
}

fn publisher_stopped(outcome: publisher::Outcome) -> DaemonError {
    match outcome {
        Some(Err(e)) => DaemonError::Output(e),
        Some(Ok(())) => DaemonError::Publisher("stopped unexpectedly".into()),
        None => DaemonError::Publisher("the journal thread panicked".into()),
    }
}

/// Applies reloaded configs: enforcement, export sinks and journal retention at once;
/// says which changes need a restart.
async fn follow_config(
    live: Arc<LiveConfig>,
    enforcer: Arc<Enforcer>,
    hub: Hub,
    exports: Exports,
    journal_path: PathBuf,
) {
    let mut versions = live.subscribe();
    let mut applied = live.current().config.clone();
    while versions.changed().await.is_ok() {
        let loaded = live.current();
        // Into the kernel as soon as the version is in force: each agent's
        // settings and systems, and whether revoking it kills.
        let scope = Arc::clone(&loaded.scope);
        let e = Arc::clone(&enforcer);
        match tokio::task::spawn_blocking(move || e.configure(&scope)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!("loading the new config's enforcement into the kernel: {e}");
            }
            Err(e) => tracing::error!("loading the new config's enforcement: {e}"),
        }
        let new = &loaded.config;
        if new.journal.retention() != applied.journal.retention() {
            hub.set_retention(new.journal.retention());
            tracing::info!(
                "journal retention now {} bytes, {}",
                new.journal.max_bytes,
                new.journal.max_age
            );
        }
        if new.exports != applied.exports {
            exports.apply(&new.exports);
        }
        if new.journal.path_in(&new.daemon.state_dir) != journal_path {
            tracing::warn!("journal.path changed: takes effect at the next restart");
        }
        let api_changed = |a: &crate::config::ApiConfig, b: &crate::config::ApiConfig| {
            (&a.listen, &a.cert, &a.key, &a.client_ca, a.insecure)
                != (&b.listen, &b.cert, &b.key, &b.client_ca, b.insecure)
        };
        if api_changed(&new.api, &applied.api) {
            tracing::warn!(
                "api listener settings changed: take effect at the next restart (api.roles and certificate files reload live)"
            );
        }
        applied = new.clone();
    }
}

/// Applies retention periodically, so age limits hold while nothing is published.
async fn prune(hub: Hub) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        every.tick().await;
        match hub.prune().await {
            Ok(p) if p.total() > 0 => tracing::debug!(
                "journal retention pruned {} events by size, {} by age",
                p.by_size,
                p.by_age
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("journal retention: {e}"),
        }
    }
}

/// Keeps the daemon's pins in place and its links attached, and reports
/// every tampering as a `sensor_tampered` event. The check is periodic
/// (`daemon.guard_interval_ms`): inotify on bpffs would see an unlinked pin
/// at once, but not a detached link, where no file changes; a round costs
/// about 30 syscalls.
async fn guard(sensors: Arc<Sensors>, publisher: Publisher, interval: Duration) {
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for t in sensors.check() {
            tracing::error!(
                "sensor tampered: {} of {} {} at {}: {}",
                t.kind.as_str(),
                t.sensor,
                t.object,
                t.path.display(),
                t.action
            );
            publisher.emit(Event::daemon(
                Identity::default(),
                Payload::SensorTampered(crate::event::SensorTampered {
                    sensor: t.sensor.to_owned(),
                    object: t.object,
                    tamper: t.kind.as_str().to_owned(),
                    path: t.path.display().to_string(),
                    action: t.action,
                    repaired: t.repaired,
                }),
            ));
        }
    }
}

/// Periodic work off the hot path: session reaping.
async fn housekeeping(enforcer: Arc<Enforcer>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        for s in enforcer.sessions().reap() {
            tracing::info!("session {} of agent {} ended", s.session, s.agent);
        }
    }
}
