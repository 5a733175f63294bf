//! The list-and-watch loop: the pods of this node (`spec.nodeName` field
//! selector) through kube-runtime's watcher, folded into a [`PodIndex`]
//! that is swapped whole on every change.
//!
//! A failure restarts the watcher from a fresh list after a backoff instead
//! of letting it retry the watch in place: a fresh list is what proves the
//! API server is back (a resumed watch says nothing until a pod changes),
//! and it also catches up on deletions missed while it was away.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};

use super::{Health, Kube, KubeError, PodMeta};
use crate::config::KubernetesConfig;

/// First wait after a failure; doubled per consecutive failure.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait between attempts, so recovery is noticed within it.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long the pods of a deleted pod are still found: events of its
/// containers' last moments are often processed after the deletion arrives.
const DELETED_GRACE: Duration = Duration::from_secs(30);
/// A connection attempt that takes longer counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client for the configured API server: an explicit URL without
/// authentication, a kubeconfig file, or the in-cluster service account.
async fn client(config: &KubernetesConfig) -> Result<kube::Client, KubeError> {
    let mut kc = if let Some(url) = &config.api_server {
        let uri = url
            .parse::<http::Uri>()
            .map_err(|e| KubeError::ApiServerUrl {
                url: url.clone(),
                detail: e.to_string(),
            })?;
        kube::Config::new(uri)
    } else if let Some(path) = &config.kubeconfig {
        let err = |detail: String| KubeError::Kubeconfig {
            path: path.display().to_string(),
            detail,
        };
        let file = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| err(e.to_string()))?
    } else {
        kube::Config::infer()
            .await
            .map_err(|e| KubeError::Infer(e.to_string()))?
    };
    kc.connect_timeout = Some(CONNECT_TIMEOUT);
    kube::Client::try_from(kc).map_err(|e| KubeError::Client(e.to_string()))
}

/// The pods as last listed and watched, with recently deleted ones.
#[derive(Default)]
struct Store {
    live: HashMap<String, Arc<PodMeta>>,
    deleted: Vec<(Instant, Arc<PodMeta>)>,
}

impl Store {
    fn apply(&mut self, pod: &Pod) {
        if let Some(meta) = PodMeta::from_pod(pod) {
            self.live.insert(meta.uid.clone(), Arc::new(meta));
        }
    }

    fn delete(&mut self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        if let Some(meta) = self.live.remove(&uid.to_ascii_lowercase()) {
            self.deleted.push((Instant::now(), meta));
        }
    }

    fn publish(&mut self, kube: &Kube) {
        self.deleted.retain(|(at, _)| at.elapsed() < DELETED_GRACE);
        let deleted = self.deleted.iter().map(|(_, p)| Arc::clone(p));
        // Live pods win over a deleted one with the same UID: inserted last.
        kube.publish(
            deleted
                .chain(self.live.values().cloned())
                .collect::<Vec<_>>(),
        );
    }
}

/// Watches until the daemon exits.
pub(super) async fn run(kube: Kube, config: KubernetesConfig) {
    let mut store = Store::default();
    let mut backoff = BACKOFF_MIN;
    loop {
        match watch_once(&kube, &config, &mut store).await {
            Ok(()) => backoff = BACKOFF_MIN,
            Err(e) => kube.degrade(&e),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Lists and watches until the first failure. `Ok` when the watch had
/// synced before it failed (the failure is still reported, but the next
/// attempt comes quickly).
async fn watch_once(
    kube: &Kube,
    config: &KubernetesConfig,
    store: &mut Store,
) -> Result<(), String> {
    let client = client(config).await.map_err(|e| e.to_string())?;
    let api: kube::Api<Pod> = kube::Api::all(client);
    let selector = format!("spec.nodeName={}", kube.node());
    let mut events = watcher::watcher(api, watcher::Config::default().fields(&selector)).boxed();
    let mut listing: Option<HashMap<String, Arc<PodMeta>>> = None;
    let mut synced = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listing = Some(HashMap::new()),
            Ok(Event::InitApply(pod)) => {
                if let (Some(list), Some(meta)) = (listing.as_mut(), PodMeta::from_pod(&pod)) {
                    list.insert(meta.uid.clone(), Arc::new(meta));
                }
            }
            Ok(Event::InitDone) => {
                if let Some(list) = listing.take() {
                    store.live = list;
                }
                store.publish(kube);
                if kube.health() != Health::Synced {
                    tracing::info!(
                        "kubernetes: {} pods of node {} listed; pod identity is up",
                        store.live.len(),
                        kube.node()
                    );
                }
                kube.store_health(Health::Synced);
                synced = true;
            }
            Ok(Event::Apply(pod)) => {
                store.apply(&pod);
                store.publish(kube);
            }
            Ok(Event::Delete(pod)) => {
                store.delete(&pod);
                store.publish(kube);
            }
            // The resource version is too old: a fresh list, not an outage.
            Err(watcher::Error::WatchError(status)) if status.code == 410 => return Ok(()),
            Err(e) => {
                let msg = e.to_string();
                if synced {
                    kube.degrade(&msg);
                    return Ok(());
                }
                return Err(msg);
            }
        }
    }
    // The watcher's stream never ends on its own.
    Err("the pod watch ended".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Workload;

    const UID: &str = "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d";

    fn pod(name: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "agents", "uid": UID.to_uppercase()},
            "spec": {"containers": [], "serviceAccountName": "coder"}
        }))
        .unwrap()
    }

    fn by_uid() -> Workload {
        Workload {
            container_id: "00".repeat(32),
            pod_uid: Some(UID.into()),
            ..Workload::default()
        }
    }

    #[test]
    fn deleted_pods_are_found_for_a_while() {
        let kube = Kube::with_pods(&KubernetesConfig::default(), vec![]);
        let mut store = Store::default();
        store.apply(&pod("coder-0"));
        store.publish(&kube);
        let generation = kube.index().generation;
        assert_eq!(kube.index().find(&by_uid()).unwrap().0.name, "coder-0");
        store.delete(&pod("coder-0"));
        store.publish(&kube);
        assert!(kube.index().generation > generation);
        assert!(store.live.is_empty());
        assert_eq!(kube.index().find(&by_uid()).unwrap().0.name, "coder-0");
        // A pod with the same UID listed again wins over the deleted one.
        store.apply(&pod("coder-1"));
        store.publish(&kube);
        assert_eq!(kube.index().find(&by_uid()).unwrap().0.name, "coder-1");
    }

    #[tokio::test]
    async fn clients_from_a_url_or_a_kubeconfig() {
        let mut config = KubernetesConfig {
            api_server: Some("http://127.0.0.1:1".into()),
            ..KubernetesConfig::default()
        };
        assert!(client(&config).await.is_ok());
        config.api_server = Some("http://[bad".into());
        let e = client(&config).await.err().expect("an error").to_string();
        assert!(
            e.starts_with("kubernetes.api_server \"http://[bad\" is not a valid URL"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kubeconfig");
        std::fs::write(
            &file,
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters:\n- name: test\n  cluster:\n    server: http://127.0.0.1:1\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
             users:\n- name: test\n  user: {}\n",
        )
        .unwrap();
        config.api_server = None;
        config.kubeconfig = Some(file);
        assert!(client(&config).await.is_ok());
        config.kubeconfig = Some(dir.path().join("missing"));
        let e = client(&config).await.err().expect("an error").to_string();
        assert!(e.starts_with("reading kubeconfig"), "{e}");
    }
}
