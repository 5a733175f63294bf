//! What the daemon keeps of a pod, and the index that maps the container
//! ids and pod UIDs read from cgroup paths to it.
//!
//! Containers are found by id first (`status.containerStatuses[].containerID`,
//! which also names the container); a container the kubelet has not reported
//! yet is still found through the pod UID that its cgroup path carries, so
//! its pod identity is known from its first event.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::event::Workload;

/// The annotation of a mirror pod: the UID of the static pod it mirrors,
/// which is the UID in the static pod's cgroup path.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The pod attributes events carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    /// The UID of the static pod this pod mirrors, if it is a mirror pod.
    pub mirror_of: Option<String>,
    /// `(container id, container name)` of every container the kubelet reported.
    pub containers: Vec<(String, String)>,
}

impl PodMeta {
    /// The parts of a pod the daemon needs; `None` for a pod without a UID
    /// (never sent by a real API server).
    #[must_use]
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let uid = meta.uid.clone().filter(|u| !u.is_empty())?;
        let spec = pod.spec.as_ref();
        // The API server defaults the account to "default"; the deprecated
        // field is only there on very old objects.
        #[allow(deprecated)]
        let service_account = spec
            .and_then(|s| {
                s.service_account_name
                    .clone()
                    .or_else(|| s.service_account.clone())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let mut containers = Vec::new();
        if let Some(status) = &pod.status {
            let lists = [
                &status.container_statuses,
                &status.init_container_statuses,
                &status.ephemeral_container_statuses,
            ];
            for list in lists.into_iter().flatten() {
                containers.extend(list.iter().filter_map(container_of_status));
            }
        }
        Some(Self {
            uid: uid.to_ascii_lowercase(),
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            service_account,
            labels: meta.labels.clone().unwrap_or_default(),
            mirror_of: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(MIRROR_ANNOTATION))
                .map(|u| u.to_ascii_lowercase()),
            containers,
        })
    }

    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    #[must_use]
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }

    /// Copies the pod's attributes into a workload read from a cgroup path.
    pub fn fill(&self, w: &mut Workload, container: Option<&str>, trust_domain: &str) {
        w.pod_uid.get_or_insert_with(|| self.uid.clone());
        w.pod_name = Some(self.name.clone());
        w.namespace = Some(self.namespace.clone());
        w.service_account = Some(self.service_account.clone());
        w.spiffe_id = Some(self.spiffe_id(trust_domain));
        w.container_name = container.map(str::to_owned);
        w.labels.clone_from(&self.labels);
    }
}

/// `(container id, name)` from a container status; the id is the part of
/// `containerd://<id>` (or `cri-o://`, `docker://`) after the scheme.
fn container_of_status(s: &ContainerStatus) -> Option<(String, String)> {
    let (_, id) = s.container_id.as_deref()?.split_once("://")?;
    (!id.is_empty()).then(|| (id.to_ascii_lowercase(), s.name.clone()))
}

/// An immutable view of the node's pods, swapped whole on every change.
#[derive(Debug, Default)]
pub struct PodIndex {
    /// Changes whenever the pods change; caches compare it.
    pub generation: u64,
    by_uid: HashMap<String, Arc<PodMeta>>,
    by_container: HashMap<String, (Arc<PodMeta>, usize)>,
    pods: usize,
}

impl PodIndex {
    #[must_use]
    pub fn new(generation: u64, pods: impl IntoIterator<Item = Arc<PodMeta>>) -> Self {
        let mut index = Self {
            generation,
            ..Self::default()
        };
        for pod in pods {
            index.pods += 1;
            for (i, (id, _)) in pod.containers.iter().enumerate() {
                index.by_container.insert(id.clone(), (Arc::clone(&pod), i));
            }
            if let Some(static_uid) = &pod.mirror_of {
                index
                    .by_uid
                    .entry(static_uid.clone())
                    .or_insert_with(|| Arc::clone(&pod));
            }
            index.by_uid.insert(pod.uid.clone(), pod);
        }
        index
    }

    /// Pods known.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.pods
    }

    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.pods == 0
    }

    /// The pod of a workload read from a cgroup path, and the container's
    /// name when the kubelet has reported the container already.
    #[must_use]
    pub fn find(&self, w: &Workload) -> Option<(&Arc<PodMeta>, Option<&str>)> {
        if let Some((pod, i)) = self.by_container.get(&w.container_id) {
            return Some((pod, Some(pod.containers[*i].1.as_str())));
        }
        let pod = self.by_uid.get(w.pod_uid.as_deref()?)?;
        Some((pod, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f9a1c6e8b2d4f70a5c3e1b9d7f6a4c2e0b8d6f4a2c0e8b6d4f2a0c8e6b4d2f0";
    const UID: &str = "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d";

    /// A pod as the API server sends it (JSON), parsed into the API types.
    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("valid pod JSON")
    }

    fn coder_pod() -> Pod {
        pod(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "coder-7d9f",
                "namespace": "agents",
                "uid": UID,
                "labels": {"app": "code-assistant"}
            },
            "spec": {
                "nodeName": "worker-1",
                "serviceAccountName": "coder",
                "containers": [{"name": "main", "image": "x"}]
            },
            "status": {
                "containerStatuses": [{
                    "name": "main",
                    "containerID": format!("containerd://{ID}"),
                    "image": "x", "imageID": "", "ready": true, "restartCount": 0
                }],
                "initContainerStatuses": [{
                    "name": "setup",
                    "containerID": format!("cri-o://{}", "ab".repeat(32)),
                    "image": "x", "imageID": "", "ready": false, "restartCount": 0
                }]
            }
        }))
    }

    fn workload(container_id: &str, pod_uid: Option<&str>) -> Workload {
        Workload {
            runtime: "containerd".into(),
            container_id: container_id.into(),
            pod_uid: pod_uid.map(str::to_owned),
            ..Workload::default()
        }
    }

    #[test]
    fn reads_what_events_carry() {
        let meta = PodMeta::from_pod(&coder_pod()).unwrap();
        assert_eq!(meta.uid, UID);
        assert_eq!(meta.name, "coder-7d9f");
        assert_eq!(meta.namespace, "agents");
        assert_eq!(meta.service_account, "coder");
        assert_eq!(meta.labels["app"], "code-assistant");
        assert_eq!(
            meta.containers,
            [
                (ID.to_owned(), "main".to_owned()),
                ("ab".repeat(32), "setup".to_owned())
            ]
        );
        assert_eq!(
            meta.spiffe_id("cluster.local"),
            "spiffe://cluster.local/ns/agents/sa/coder"
        );
    }

    #[test]
    fn service_account_defaults_and_containers_without_ids() {
        let meta = PodMeta::from_pod(&pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "uid": UID},
            "spec": {"containers": []},
            "status": {"containerStatuses": [{
                "name": "waiting", "image": "x", "imageID": "", "ready": false, "restartCount": 0
            }]}
        })))
        .unwrap();
        assert_eq!(meta.service_account, "default");
        assert!(meta.containers.is_empty());
        assert!(PodMeta::from_pod(&pod(serde_json::json!({"metadata": {"name": "p"}}))).is_none());
    }

    #[test]
    fn finds_by_container_id_then_pod_uid() {
        let meta = Arc::new(PodMeta::from_pod(&coder_pod()).unwrap());
        let index = PodIndex::new(7, [meta]);
        assert_eq!(index.len(), 1);
        let (pod, name) = index.find(&workload(ID, None)).unwrap();
        assert_eq!((pod.name.as_str(), name), ("coder-7d9f", Some("main")));
        // A container the kubelet has not reported yet: its pod is known.
        let (pod, name) = index.find(&workload(&"cd".repeat(32), Some(UID))).unwrap();
        assert_eq!((pod.name.as_str(), name), ("coder-7d9f", None));
        assert!(index.find(&workload(&"cd".repeat(32), None)).is_none());
        assert!(
            index
                .find(&workload(
                    &"cd".repeat(32),
                    Some("00000000-0000-0000-0000-000000000000")
                ))
                .is_none()
        );
    }

    #[test]
    fn static_pods_are_found_through_their_mirror() {
        let hash = "6b1e2a3f4c5d6e7f8091a2b3c4d5e6f7";
        let meta = PodMeta::from_pod(&pod(serde_json::json!({
            "metadata": {
                "name": "etcd-worker-1", "namespace": "kube-system",
                "uid": UID,
                "annotations": {MIRROR_ANNOTATION: hash}
            }
        })))
        .unwrap();
        let index = PodIndex::new(1, [Arc::new(meta)]);
        let (pod, _) = index.find(&workload(ID, Some(hash))).unwrap();
        assert_eq!(pod.name, "etcd-worker-1");
    }

    #[test]
    fn fill_sets_every_pod_field() {
        let meta = PodMeta::from_pod(&coder_pod()).unwrap();
        let mut w = workload(ID, None);
        meta.fill(&mut w, Some("main"), "prod.example.org");
        assert_eq!(w.pod_uid.as_deref(), Some(UID));
        assert_eq!(w.pod_name.as_deref(), Some("coder-7d9f"));
        assert_eq!(w.namespace.as_deref(), Some("agents"));
        assert_eq!(w.service_account.as_deref(), Some("coder"));
        assert_eq!(
            w.spiffe_id.as_deref(),
            Some("spiffe://prod.example.org/ns/agents/sa/coder")
        );
        assert_eq!(w.container_name.as_deref(), Some("main"));
        assert_eq!(w.labels["app"], "code-assistant");
    }
}
