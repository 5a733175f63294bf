//! Kubernetes pod identity: the pods of this node, watched on the API
//! server, give the containers the daemon sees a pod name, namespace, UID,
//! labels, service account, container name and SPIFFE ID.
//!
//! - [`pods`]: what is kept of a pod and the container-id / pod-UID index;
//! - [`select`]: the agents' `match.kubernetes` selectors;
//! - [`hold`]: the pipeline's side: pod identity on attributions, and events
//!   held back while a container's pod metadata is on its way;
//! - `watch`: the list-and-watch loop against the API server.
//!
//! The API server being unreachable never stops the sensors: the last known
//! pods stay in the index, new containers get cgroup-level identity, and the
//! node status carries a warning until the watch is back.

pub mod hold;
pub mod pods;
mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::config::KubernetesConfig;
pub use pods::{PodIndex, PodMeta};

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubernetes.api_server {url:?} is not a valid URL: {detail}")]
    ApiServerUrl { url: String, detail: String },
    #[error("reading kubeconfig {path}: {detail}")]
    Kubeconfig { path: String, detail: String },
    #[error("no Kubernetes client configuration (not in a pod, no kubeconfig): {0}")]
    Infer(String),
    #[error("building the Kubernetes client: {0}")]
    Client(String),
}

/// Where the pod watch stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// `[kubernetes]` is off (or `auto` outside a pod).
    Disabled,
    /// Started; the first pod list has not arrived.
    Connecting,
    /// The pod list is loaded and the watch is running.
    Synced,
    /// The API server cannot be reached; the last known pods are kept.
    Degraded { since: SystemTime, error: String },
}

/// Counters of the pod-identity machinery, for metrics and status.
#[derive(Debug, Default)]
pub struct KubeCounters {
    /// Events held back right now, waiting for pod metadata.
    pub held: AtomicU64,
    /// cgroups in the kernel's watch set.
    pub watched_cgroups: AtomicU64,
    /// Events of containers watched only until their pod's metadata showed
    /// that no agent selects them; dropped.
    pub speculative_dropped: AtomicU64,
    /// Times the watch failed and was restarted.
    pub watch_failures: AtomicU64,
}

struct Inner {
    node: String,
    metadata_wait: Duration,
    max_held: usize,
    index: ArcSwap<PodIndex>,
    health: Mutex<Health>,
    counters: KubeCounters,
}

/// The daemon's handle on pod identity. Cheap to clone.
#[derive(Clone)]
pub struct Kube {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("node", &self.inner.node)
            .field("health", &self.health())
            .field("pods", &self.index().len())
            .finish_non_exhaustive()
    }
}

impl Kube {
    fn new(config: &KubernetesConfig, node: String, health: Health) -> Self {
        Self {
            inner: Arc::new(Inner {
                node,
                metadata_wait: config.metadata_wait.0,
                max_held: config.metadata_wait_events,
                index: ArcSwap::from_pointee(PodIndex::default()),
                health: Mutex::new(health),
                counters: KubeCounters::default(),
            }),
        }
    }

    /// Pod identity off: an empty index that never changes.
    #[must_use]
    pub fn disabled() -> Self {
        Self::new(
            &KubernetesConfig::default(),
            String::new(),
            Health::Disabled,
        )
    }

    /// Starts watching the pods of this node when `[kubernetes]` is on
    /// (`node_fallback` is the daemon's node name). Must run inside a Tokio
    /// runtime.
    #[must_use]
    pub fn start(config: &KubernetesConfig, node_fallback: &str) -> Self {
        if !config.is_enabled() {
            return Self::disabled();
        }
        let node = config.node(node_fallback);
        let kube = Self::new(config, node.clone(), Health::Connecting);
        tracing::info!("kubernetes: watching the pods of node {node}");
        tokio::spawn(watch::run(kube.clone(), config.clone()));
        kube
    }

    /// The node whose pods are watched (empty when disabled).
    #[must_use]
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    #[must_use]
    pub fn enabled(&self) -> bool {
        self.health() != Health::Disabled
    }

    #[must_use]
    pub fn health(&self) -> Health {
        self.inner
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether events may wait for pod metadata: the watch is starting or
    /// running. While the API server is unreachable nothing would arrive.
    #[must_use]
    pub fn metadata_expected(&self) -> bool {
        matches!(self.health(), Health::Connecting | Health::Synced)
    }

    /// Whether the pod list is loaded and the watch runs.
    #[must_use]
    pub fn up(&self) -> bool {
        self.health() == Health::Synced
    }

    /// How long events wait for their pod's metadata.
    #[must_use]
    pub fn metadata_wait(&self) -> Duration {
        self.inner.metadata_wait
    }

    /// Most events held at once.
    #[must_use]
    pub fn max_held(&self) -> usize {
        self.inner.max_held
    }

    /// The current pods; hold it only briefly (it pins one version).
    #[must_use]
    pub fn index(&self) -> arc_swap::Guard<Arc<PodIndex>> {
        self.inner.index.load()
    }

    #[must_use]
    pub fn counters(&self) -> &KubeCounters {
        &self.inner.counters
    }

    /// Status warnings: the API server is unreachable, or the first pod list
    /// has not arrived.
    #[must_use]
    pub fn warnings(&self) -> Vec<String> {
        match self.health() {
            Health::Disabled | Health::Synced => Vec::new(),
            Health::Connecting => vec![format!(
                "kubernetes: waiting for the first list of the pods of node {}; events of containers carry cgroup-level identity until it arrives",
                self.inner.node
            )],
            Health::Degraded { since, error } => vec![format!(
                "kubernetes: API server unreachable since {}: {error}; events of new containers carry cgroup-level identity ({} pods known from before)",
                crate::event::format_time(since),
                self.index().len()
            )],
        }
    }

    fn store_health(&self, health: Health) {
        *self
            .inner
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = health;
    }

    /// Marks the API server unreachable; the first failure is logged.
    fn degrade(&self, error: &str) {
        self.inner
            .counters
            .watch_failures
            .fetch_add(1, Ordering::Relaxed);
        let mut health = self
            .inner
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &mut *health {
            Health::Degraded { error: last, .. } => error.clone_into(last),
            h => {
                tracing::warn!(
                    "kubernetes: pod watch failed, degrading to cgroup-level identity: {error}"
                );
                *h = Health::Degraded {
                    since: SystemTime::now(),
                    error: error.to_owned(),
                };
            }
        }
    }

    fn publish(&self, pods: impl IntoIterator<Item = Arc<PodMeta>>) {
        let generation = self.inner.index.load().generation + 1;
        self.inner
            .index
            .store(Arc::new(PodIndex::new(generation, pods)));
    }

    /// A handle whose index is set by hand, for unit tests of its users.
    #[cfg(test)]
    pub(crate) fn with_pods(config: &KubernetesConfig, pods: Vec<PodMeta>) -> Self {
        let kube = Self::new(config, "test-node".into(), Health::Synced);
        kube.publish(pods.into_iter().map(Arc::new));
        kube
    }

    #[cfg(test)]
    pub(crate) fn set_pods(&self, pods: Vec<PodMeta>) {
        self.publish(pods.into_iter().map(Arc::new));
    }

    #[cfg(test)]
    pub(crate) fn set_health(&self, health: Health) {
        self.store_health(health);
    }
}

impl prometheus_client::collector::Collector for Kube {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use crate::metrics::{counter, gauge};
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let kc = self.counters();
        gauge(
            &mut enc,
            "kubernetes_api_up",
            "1 when the pod list is loaded and the watch runs, else 0",
            u64::from(self.up()),
        )?;
        gauge(
            &mut enc,
            "kubernetes_pods",
            "Pods of this node known",
            self.index().len() as u64,
        )?;
        gauge(
            &mut enc,
            "kubernetes_held_events",
            "Events held back, waiting for their pod's metadata",
            load(&kc.held),
        )?;
        counter(
            &mut enc,
            "kubernetes_speculative_dropped_events",
            "Events of containers watched while their pod was unknown, dropped because no agent selects the pod",
            load(&kc.speculative_dropped),
        )?;
        counter(
            &mut enc,
            "kubernetes_watch_failures",
            "Failures of the pod watch",
            load(&kc.watch_failures),
        )?;
        gauge(
            &mut enc,
            "watched_cgroups",
            "cgroups watched by match.cgroups and match.kubernetes",
            load(&kc.watched_cgroups),
        )
    }
}
