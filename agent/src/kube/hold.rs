//! The pipeline's side of pod identity.
//!
//! [`PodAttributor::attribute`] adds pod metadata (and an agent chosen by a
//! `match.kubernetes` selector) to the attribution of a container cgroup.
//! [`PodAttributor::admit`] holds back events of a container whose pod is
//! not known yet, per cgroup and in order, for at most
//! `kubernetes.metadata_wait` and `kubernetes.metadata_wait_events`;
//! [`PodAttributor::release`] hands them back once the metadata has landed or
//! the wait ran out, and [`PodAttributor::settle`] decides what goes out.
//! Events that went out without pod identity are counted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Kube;
use crate::event::{Event, Workload};
use crate::identity::attribute::Attribution;
use crate::live::Loaded;
use crate::stats::Stats;

/// Cached attributions beyond which the cache starts over (cgroup ids are
/// never reused, so old entries are only ever stale).
const MAX_CACHED: usize = 65_536;
/// cgroups remembered as having waited in vain.
const MAX_GAVE_UP: usize = 65_536;

struct Cached {
    generation: u64,
    base: Arc<Attribution>,
    out: Arc<Attribution>,
}

/// Events of one container waiting for its pod.
struct Waiting {
    deadline: Instant,
    workload: Workload,
    events: VecDeque<Event>,
}

/// Pod identity for the pipeline; owned by it, so it needs no locks.
pub struct PodAttributor {
    kube: Kube,
    watch_all: bool,
    cache: HashMap<u64, Cached>,
    waiting: HashMap<u64, Waiting>,
    held: usize,
    /// Waited in vain: their events go out at once.
    gave_up: HashSet<u64>,
    /// Evicted when the hold was full, in arrival order.
    overflow: Vec<(u64, Event)>,
}

/// A workload that is a pod's container but has no pod metadata yet.
fn pending_pod(a: &Attribution) -> Option<&Workload> {
    if a.session.is_some() {
        return None;
    }
    a.workload
        .as_ref()
        .filter(|w| w.pod_uid.is_some() && w.pod_name.is_none())
}

impl PodAttributor {
    /// `watch_all`: every process is reported (discovery mode), so events of
    /// pods that no agent selects are wanted too.
    #[must_use]
    pub fn new(kube: Kube, watch_all: bool) -> Self {
        Self {
            kube,
            watch_all,
            cache: HashMap::new(),
            waiting: HashMap::new(),
            held: 0,
            gave_up: HashSet::new(),
            overflow: Vec::new(),
        }
    }

    /// `base` with the pod's metadata and, if the cgroup globs chose none,
    /// the agent its `match.kubernetes` selector chooses. Session cgroups
    /// and cgroups of no container are returned as they are.
    pub fn attribute(
        &mut self,
        cgroup_id: u64,
        base: Arc<Attribution>,
        loaded: &Loaded,
    ) -> Arc<Attribution> {
        let Some(workload) = base.workload.as_ref().filter(|_| base.session.is_none()) else {
            return base;
        };
        let index = self.kube.index();
        if let Some(c) = self.cache.get(&cgroup_id)
            && c.generation == index.generation
            && Arc::ptr_eq(&c.base, &base)
        {
            return Arc::clone(&c.out);
        }
        let out = match index.find(workload) {
            Some((pod, container)) => {
                let mut w = workload.clone();
                pod.fill(&mut w, container, &loaded.config.kubernetes.trust_domain);
                let path = base.cgroup.as_deref().unwrap_or_default();
                let agent = loaded
                    .scope
                    .match_container(path, &w)
                    .map(|id| Arc::from(loaded.scope.agent(id).name.as_str()));
                Arc::new(Attribution {
                    agent,
                    session: None,
                    cgroup: base.cgroup.clone(),
                    workload: Some(w),
                })
            }
            None => Arc::clone(&base),
        };
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(
            cgroup_id,
            Cached {
                generation: index.generation,
                base,
                out: Arc::clone(&out),
            },
        );
        out
    }

    /// Passes an enriched event on, holds it back until its pod is known
    /// (`None`), or drops it (`None`: see [`Self::settle`]).
    pub fn admit(&mut self, event: Event, a: &Attribution, stats: &Stats) -> Option<Event> {
        let cgroup_id = event.identity.cgroup_id;
        let Some(workload) = pending_pod(a) else {
            // The pipeline's enrichment already copied the attribution.
            return self.keep(a, stats).then_some(event);
        };
        if let Some(w) = self.waiting.get_mut(&cgroup_id) {
            w.events.push_back(event);
        } else if self.kube.metadata_expected() && !self.gave_up.contains(&cgroup_id) {
            let mut events = VecDeque::new();
            events.push_back(event);
            self.waiting.insert(
                cgroup_id,
                Waiting {
                    deadline: Instant::now() + self.kube.metadata_wait(),
                    workload: workload.clone(),
                    events,
                },
            );
        } else {
            return self.keep(a, stats).then_some(event);
        }
        self.held += 1;
        if self.held > self.kube.max_held() {
            self.evict_oldest();
        }
        self.publish_held();
        None
    }

    /// Makes room: the container that has waited longest gives up.
    fn evict_oldest(&mut self) {
        let Some((&id, _)) = self.waiting.iter().min_by_key(|(_, w)| w.deadline) else {
            return;
        };
        if let Some(w) = self.waiting.remove(&id) {
            self.held -= w.events.len();
            self.give_up(id);
            self.overflow.extend(w.events.into_iter().map(|e| (id, e)));
        }
    }

    fn give_up(&mut self, cgroup_id: u64) {
        if self.gave_up.len() >= MAX_GAVE_UP {
            self.gave_up.clear();
        }
        self.gave_up.insert(cgroup_id);
    }

    fn publish_held(&self) {
        self.kube
            .counters()
            .held
            .store(self.held as u64, Ordering::Relaxed);
    }

    /// Held events whose pod is now known or whose wait ran out (all of
    /// them when `all`, at shutdown), each container's in order, with their
    /// cgroup ids. Attribute each again and pass it to [`Self::settle`].
    pub fn release(&mut self, all: bool) -> Vec<(u64, Event)> {
        let mut out = std::mem::take(&mut self.overflow);
        if self.waiting.is_empty() {
            return out;
        }
        let now = Instant::now();
        let index = self.kube.index();
        let mut done: Vec<(u64, bool)> = self
            .waiting
            .iter()
            .filter_map(|(&id, w)| {
                let known = index.find(&w.workload).is_some();
                let expired = now >= w.deadline;
                (all || known || expired).then_some((id, known))
            })
            .collect();
        drop(index);
        // Oldest first, so the output roughly keeps arrival order.
        done.sort_by_key(|(id, _)| self.waiting.get(id).map(|w| w.deadline));
        for (id, known) in done {
            if let Some(w) = self.waiting.remove(&id) {
                self.held -= w.events.len();
                if !known {
                    self.give_up(id);
                }
                out.extend(w.events.into_iter().map(|e| (id, e)));
            }
        }
        self.publish_held();
        out
    }

    /// The final word on an event, given its (re-)attribution: it carries
    /// the attribution's agent and workload; it is counted when it goes out
    /// without the pod identity it should have; it is dropped (`None`) when
    /// it belongs to a pod that no agent selects, which the kernel only
    /// watched while that pod's metadata was unknown.
    pub fn settle(&mut self, mut event: Event, a: &Attribution, stats: &Stats) -> Option<Event> {
        if !self.keep(a, stats) {
            return None;
        }
        if a.session.is_none() && a.workload.is_some() {
            event.identity.agent = a.agent.as_deref().map(str::to_owned);
            event.identity.workload.clone_from(&a.workload);
        }
        Some(event)
    }

    /// Whether an event with this attribution goes out; counts those that
    /// go out without pod identity and those dropped.
    fn keep(&self, a: &Attribution, stats: &Stats) -> bool {
        let Some(w) = a.workload.as_ref().filter(|_| a.session.is_none()) else {
            return true;
        };
        if w.pod_uid.is_some() && w.pod_name.is_none() {
            stats.without_pod_identity.fetch_add(1, Ordering::Relaxed);
        } else if w.pod_name.is_some() && a.agent.is_none() && !self.watch_all {
            self.kube
                .counters()
                .speculative_dropped
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Events held right now.
    #[must_use]
    pub const fn held(&self) -> usize {
        self.held
    }

    /// How long an event may be held at most.
    #[must_use]
    pub fn wait(&self) -> Duration {
        self.kube.metadata_wait()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::KubernetesConfig;
    use crate::event::{Identity, Payload};
    use crate::identity::attribute::Attributor;
    use crate::kube::{Health, PodMeta};
    use crate::live::LiveConfig;

    const UID: &str = "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d";
    const OTHER_UID: &str = "99999999-5e6f-7a8b-9c0d-1e2f3a4b5c6d";
    const ID: &str = "3f9a1c6e8b2d4f70a5c3e1b9d7f6a4c2e0b8d6f4a2c0e8b6d4f2a0c8e6b4d2f0";

    fn path(uid: &str) -> String {
        format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
            uid.replace('-', "_")
        )
    }

    fn loaded(extra: &str) -> Arc<Loaded> {
        let text = format!(
            r#"
[kubernetes]
trust_domain = "example.org"
[[agent]]
name = "by-glob"
  [agent.match]
  cgroups = ["/kubepods.slice/**/kubepods-besteffort-pod1a2b*.slice/*.scope"]
[[agent]]
name = "coder"
  [agent.match]
  kubernetes = {{ namespace = "agents", labels = {{ "app" = "code-assistant" }} }}
{extra}"#
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vigil.toml");
        std::fs::write(&file, text).unwrap();
        LiveConfig::load(&file).unwrap().current()
    }

    fn pod(uid: &str, ns: &str, labels: &[(&str, &str)]) -> PodMeta {
        PodMeta {
            uid: uid.into(),
            name: format!("pod-{}", &uid[..4]),
            namespace: ns.into(),
            service_account: "coder".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            mirror_of: None,
            containers: vec![(ID.into(), "main".into())],
        }
    }

    /// The attributor of the identity module, as the pipeline runs it.
    fn base(at: &mut Attributor, id: u64, p: &str, loaded: &Loaded) -> Arc<Attribution> {
        at.attribute(
            id,
            || Some(p.into()),
            |path| {
                loaded
                    .scope
                    .match_cgroup(path)
                    .map(|id| Arc::from(loaded.scope.agent(id).name.as_str()))
            },
        )
    }

    fn event(cgroup_id: u64, n: u64) -> Event {
        Event {
            seq: 0,
            time: std::time::SystemTime::UNIX_EPOCH,
            kernel_ts_ns: n,
            identity: Identity {
                cgroup_id,
                ..Identity::default()
            },
            process: None,
            payload: Payload::Exit(crate::event::Exit {
                code: Some(0),
                signal: None,
            }),
        }
    }

    fn config() -> KubernetesConfig {
        KubernetesConfig {
            metadata_wait: crate::config::HumanDuration(Duration::from_hours(1)),
            metadata_wait_events: 3,
            ..KubernetesConfig::default()
        }
    }

    #[test]
    fn known_pods_give_identity_and_select_agents() {
        let l = loaded("");
        let kube = Kube::with_pods(
            &config(),
            vec![pod(OTHER_UID, "agents", &[("app", "code-assistant")])],
        );
        let mut pods = PodAttributor::new(kube, false);
        let mut at = Attributor::new("/vigil");
        let b = base(&mut at, 1, &path(OTHER_UID), &l);
        assert_eq!(b.agent, None, "no glob matches this pod's cgroup");
        let a = pods.attribute(1, b, &l);
        assert_eq!(a.agent.as_deref(), Some("coder"));
        let w = a.workload.as_ref().unwrap();
        assert_eq!(w.pod_name.as_deref(), Some("pod-9999"));
        assert_eq!(w.container_name.as_deref(), Some("main"));
        assert_eq!(
            w.spiffe_id.as_deref(),
            Some("spiffe://example.org/ns/agents/sa/coder")
        );
        // The glob of an earlier agent wins over a later selector.
        let kube = Kube::with_pods(
            &config(),
            vec![pod(UID, "agents", &[("app", "code-assistant")])],
        );
        let mut pods = PodAttributor::new(kube, false);
        let b = base(&mut at, 2, &path(UID), &l);
        assert_eq!(pods.attribute(2, b, &l).agent.as_deref(), Some("by-glob"));
    }

    #[test]
    fn events_wait_for_their_pod_in_order() {
        let l = loaded("");
        let kube = Kube::with_pods(&config(), vec![]);
        let stats = Stats::default();
        let mut pods = PodAttributor::new(kube.clone(), false);
        let mut at = Attributor::new("/vigil");
        let a = pods.attribute(5, base(&mut at, 5, &path(OTHER_UID), &l), &l);
        assert!(a.workload.as_ref().unwrap().pod_name.is_none());
        assert!(pods.admit(event(5, 1), &a, &stats).is_none());
        assert!(pods.admit(event(5, 2), &a, &stats).is_none());
        assert_eq!(pods.held(), 2);
        assert_eq!(kube.counters().held.load(Ordering::Relaxed), 2);
        assert!(pods.release(false).is_empty(), "the pod is still unknown");
        kube.set_pods(vec![pod(OTHER_UID, "agents", &[("app", "code-assistant")])]);
        let released = pods.release(false);
        assert_eq!(
            released
                .iter()
                .map(|(_, e)| e.kernel_ts_ns)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        for (id, e) in released {
            let a = pods.attribute(id, base(&mut at, id, &path(OTHER_UID), &l), &l);
            let e = pods.settle(e, &a, &stats).expect("selected pod");
            assert_eq!(e.identity.agent.as_deref(), Some("coder"));
            assert_eq!(
                e.identity.workload.unwrap().namespace.as_deref(),
                Some("agents")
            );
        }
        assert_eq!(stats.without_pod_identity.load(Ordering::Relaxed), 0);
        assert_eq!(pods.held(), 0);
    }

    #[test]
    fn pods_no_agent_selects_are_dropped_unless_watching_all() {
        let l = loaded("");
        let kube = Kube::with_pods(&config(), vec![pod(OTHER_UID, "web", &[])]);
        let stats = Stats::default();
        let mut at = Attributor::new("/vigil");
        for (watch_all, kept) in [(false, false), (true, true)] {
            let mut pods = PodAttributor::new(kube.clone(), watch_all);
            let a = pods.attribute(6, base(&mut at, 6, &path(OTHER_UID), &l), &l);
            assert_eq!(pods.admit(event(6, 1), &a, &stats).is_some(), kept);
        }
        assert_eq!(
            kube.counters().speculative_dropped.load(Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn no_waiting_while_degraded_and_overflow_gives_up() {
        let l = loaded("");
        let kube = Kube::with_pods(&config(), vec![]);
        let stats = Stats::default();
        let mut pods = PodAttributor::new(kube.clone(), false);
        let mut at = Attributor::new("/vigil");
        // A glob-matched container: it has its agent without pod metadata.
        let a = pods.attribute(7, base(&mut at, 7, &path(UID), &l), &l);
        assert_eq!(a.agent.as_deref(), Some("by-glob"));
        kube.set_health(Health::Degraded {
            since: std::time::SystemTime::now(),
            error: "connection refused".into(),
        });
        assert!(
            pods.admit(event(7, 1), &a, &stats).is_some(),
            "not held while degraded"
        );
        assert_eq!(stats.without_pod_identity.load(Ordering::Relaxed), 1);
        kube.set_health(Health::Synced);
        for n in 0..4 {
            assert!(pods.admit(event(7, n), &a, &stats).is_none());
        }
        // Over the limit of 3: the container gives up, all its events go.
        assert_eq!(pods.held(), 0);
        let out = pods.release(false);
        assert_eq!(out.len(), 4);
        for (_, e) in out {
            assert!(pods.settle(e, &a, &stats).is_some());
        }
        assert_eq!(stats.without_pod_identity.load(Ordering::Relaxed), 5);
        // Having given up, it does not wait again.
        assert!(pods.admit(event(7, 9), &a, &stats).is_some());
    }

    #[test]
    fn expired_waits_are_released_without_identity() {
        let l = loaded("");
        let mut cfg = config();
        cfg.metadata_wait = crate::config::HumanDuration(Duration::ZERO);
        let kube = Kube::with_pods(&cfg, vec![]);
        let stats = Stats::default();
        let mut pods = PodAttributor::new(kube, false);
        let mut at = Attributor::new("/vigil");
        let a = pods.attribute(8, base(&mut at, 8, &path(OTHER_UID), &l), &l);
        assert!(pods.admit(event(8, 1), &a, &stats).is_none());
        let out = pods.release(false);
        assert_eq!(out.len(), 1);
        let e = pods.settle(out[0].1.clone(), &a, &stats).unwrap();
        assert_eq!(e.identity.agent, None);
        assert_eq!(stats.without_pod_identity.load(Ordering::Relaxed), 1);
    }
}
