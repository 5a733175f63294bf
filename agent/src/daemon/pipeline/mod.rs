//! The event pipeline: kernel record → typed, enriched, attributed event →
//! scope verdict. It owns all per-event state (process table, cgroup and
//! attribution caches) and runs on one task, so it needs no locks on the hot
//! path and keeps events in kernel order.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use vigil_common::{DNS_EGRESS, verdict};

use crate::{
    enforcement::Enforcer,
    event::{Anomaly, Event, Payload},
    identity::{
        attribute::{Attribution, Attributor},
        cgroup::{CgroupFs, CgroupResolver},
        procs::{ProcessTable, resolve_path},
    },
    kube::Kube,
    live::{LiveConfig, Loaded},
    metrics::Metrics,
    scope::{
        aggregate::Aggregator,
        dns::{DnsCache, PendingQueries, parse_response},
    },
    sensors::{
        decode::{self, Clock, Record},
        loss::{NodeLosses, SessionLosses},
    },
    stats::Stats,
};

mod dns;
mod guarded;
mod loss;
mod violation;

/// Names of a link the kernel could not resolve, through the caller's
/// `/proc` view (racy: the caller may have moved or exited), and the
/// identity of the file the new name reaches, looked up now: a hard link
/// or a renamed file is the same inode as the credential it names, and a
/// symbolic link leads to it.
fn complete_link(event: &mut Event, r: &vigil_common::LinkRecord) {
    let Some(pid) = event.process.as_ref().map(|p| p.pid) else {
        return;
    };
    let Payload::FileLink(link) = &mut event.payload else {
        return;
    };
    let symlink = vigil_common::link_syscall::is_symlink(r.syscall);
    if !link.path.starts_with('/')
        && let Some(abs) = resolve_path(pid, r.new_dfd, &link.path)
    {
        link.raw_path = Some(std::mem::replace(&mut link.path, abs));
    }
    if !link.target.starts_with('/') {
        let abs = if symlink {
            link.path
                .rfind('/')
                .filter(|_| link.path.starts_with('/'))
                .map(|i| {
                    crate::identity::procs::normalize(&format!(
                        "{}/{}",
                        &link.path[..i],
                        link.target
                    ))
                })
        } else {
            resolve_path(pid, r.old_dfd, &link.target)
        };
        if let Some(abs) = abs {
            link.raw_target = Some(std::mem::replace(&mut link.target, abs));
        }
    }
    if link.error.is_some() || !link.path.starts_with('/') {
        return;
    }
    // The caller's root, while it lives (a container's files); the
    // daemon's own view after.
    let in_root = format!("/proc/{pid}/root{}", link.path);
    let look = |p: &str| {
        if symlink {
            std::fs::metadata(p)
        } else {
            std::fs::symlink_metadata(p)
        }
    };
    if let Ok(m) = look(&in_root).or_else(|_| look(&link.path)) {
        use std::os::unix::fs::MetadataExt as _;
        link.inode = Some(crate::event::FileInode {
            dev: m.dev(),
            ino: m.ino(),
            nlink: u32::try_from(m.nlink()).unwrap_or(u32::MAX),
        });
    }
}

/// Deepest lineage reported.
const LINEAGE_MAX: usize = 16;

/// What the pipeline is built from.
pub struct Parts {
    pub live: Arc<LiveConfig>,
    pub enforcer: Arc<Enforcer>,
    pub stats: Arc<Stats>,
    pub metrics: Arc<Metrics>,
    pub kube: Kube,
    /// Addresses of the agents' host names, kept fresh by the resolver.
    pub dns: Arc<DnsCache>,
    pub repeats: super::repeats::Repeats,
    /// The kernel's loss counters of the node, per sensor.
    pub node_losses: Option<NodeLosses>,
    /// The kernel's loss counters per cgroup, reported per session.
    pub losses: Option<SessionLosses>,
}

/// Everything the pipeline makes goes to one output, in kernel order: each
/// event, then what it caused (a revocation, anomalies), and between
/// records what housekeeping made (expiries, folded anomalies, losses).
pub type Out = Vec<Event>;

pub struct Pipeline {
    live: Arc<LiveConfig>,
    enforcer: Arc<Enforcer>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    node_losses: Option<NodeLosses>,
    clock: Clock,
    clock_sampled: Instant,
    procs: ProcessTable,
    resolver: CgroupResolver,
    attributor: Attributor,
    pods: crate::kube::hold::PodAttributor,
    config_version: u64,
    dns: Arc<DnsCache>,
    /// DNS queries of watched sockets awaiting their answers: only an
    /// answer to one of them is believed.
    queries: PendingQueries,
    /// The daemon's own files, which no watched process may write.
    guarded: guarded::Guarded,
    /// DNS answers that processes of agents sent from port 53, so that their
    /// arrival is not taken for a resolver's.
    served: PendingQueries,
    aggregator: Aggregator,
    /// Boot-clock time at which the record being processed was read, for
    /// the revocation log (how much of its latency was wake-up).
    read_ns: u64,
    repeats: super::repeats::Repeats,
    /// Ring-buffer losses per cgroup, reported per session.
    losses: Option<SessionLosses>,
}

impl Pipeline {
    pub fn new(parts: Parts, cgroups: &CgroupFs) -> Self {
        let Parts {
            live,
            enforcer,
            stats,
            metrics,
            kube,
            dns,
            repeats,
            node_losses,
            losses,
        } = parts;
        let mut resolver = CgroupResolver::new(cgroups, Duration::from_millis(200));
        let sessions = enforcer.sessions();
        let parent = sessions.parent().to_owned();
        let (parent_id, _) = sessions.parent_id_level();
        resolver.insert(parent_id, &parent);
        for s in sessions.list(None) {
            resolver.insert(s.cgroup_id, &s.cgroup);
        }
        let loaded = live.current();
        let config_version = loaded.version;
        let aggregator = Aggregator::new(loaded.scope.aggregate_window());
        let pods = crate::kube::hold::PodAttributor::new(kube, loaded.config.daemon.watch_all);
        let config_file = match live.source() {
            crate::live::Source::File(p) => Some(p.as_path()),
            crate::live::Source::Embedded => None,
        };
        let guarded = guarded::Guarded::new(
            &loaded.config.daemon.pin_dir,
            &loaded.config.daemon.state_dir,
            config_file,
            &cgroups.mount.join(parent.trim_start_matches('/')),
            std::process::id(),
        );
        drop(loaded);
        Self {
            live,
            enforcer,
            stats,
            metrics,
            node_losses,
            clock: Clock::now(),
            clock_sampled: Instant::now(),
            procs: ProcessTable::new().with_cgroup_fs(cgroups.clone()),
            resolver,
            attributor: Attributor::new(&parent),
            pods,
            config_version,
            dns,
            queries: PendingQueries::default(),
            served: PendingQueries::default(),
            guarded,
            aggregator,
            read_ns: 0,
            repeats,
            losses,
        }
    }

    /// Tells the pipeline about a cgroup the daemon just created.
    pub fn learn_cgroup(&mut self, id: u64, path: &str) {
        self.resolver.insert(id, path);
    }

    /// Housekeeping between batches: clock drift, config changes,
    /// expiries, folded anomalies, losses, tombstones.
    pub fn tick(&mut self, out: &mut Out) {
        if self.clock_sampled.elapsed() > Duration::from_secs(10) {
            self.clock = Clock::now();
            self.clock_sampled = Instant::now();
        }
        let loaded = self.live.current();
        if loaded.version != self.config_version {
            self.config_version = loaded.version;
            self.attributor.clear();
            // Report what the old window held before taking the new one.
            self.drain_anomalies(out);
            self.aggregator = Aggregator::new(loaded.scope.aggregate_window());
        }
        for (agent, grant) in self.enforcer.expired() {
            tracing::info!("task {} of agent {agent} expired", grant.task);
            out.push(Event::daemon(
                crate::event::Identity {
                    agent: Some(agent.clone()),
                    task: Some(grant.task.clone()),
                    ..crate::event::Identity::default()
                },
                Payload::TaskEnded(crate::event::TaskEnded {
                    agent,
                    task: grant.task,
                    reason: "expired".to_owned(),
                    by: grant.by,
                }),
            ));
        }
        self.flush_anomalies(out);
        self.losses(&loaded, out);
        loaded.scope.refresh_identity_files(Instant::now());
        self.procs.sweep();
        out.extend(self.repeats.sweep());
        self.stats
            .open_repeat_keys
            .store(self.repeats.tracked() as u64, Ordering::Relaxed);
        self.release_held(&loaded, false, out);
    }

    /// Decodes and processes one ring-buffer record. A malformed record is
    /// counted and skipped.
    pub fn process_bytes(&mut self, bytes: &[u8], out: &mut Out) {
        self.stats.records.fetch_add(1, Ordering::Relaxed);
        self.read_ns = crate::enforcement::boot_now_ns();
        match decode::decode(bytes) {
            Ok(record) => self.process(&record, out),
            Err(e) => {
                let n = self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                // The first few are logged; all are counted.
                if n < 10 {
                    tracing::warn!("skipping malformed kernel record: {e}");
                }
            }
        }
    }

    fn attribution(&mut self, loaded: &Loaded, cgroup_id: u64) -> Arc<Attribution> {
        let resolver = &mut self.resolver;
        let base = self.attributor.attribute(
            cgroup_id,
            || resolver.resolve(cgroup_id),
            |path| {
                loaded
                    .scope
                    .match_cgroup(path)
                    .map(|id| Arc::from(loaded.scope.agent(id).name.as_str()))
            },
        );
        self.pods.attribute(cgroup_id, base, loaded)
    }

    /// Events held for their pod's metadata that may go now (all of them
    /// when `all`, at shutdown): attributed again, checked and emitted.
    fn release_held(&mut self, loaded: &Loaded, all: bool, out: &mut Out) {
        for (cgroup_id, event) in self.pods.release(all) {
            let a = self.attribution(loaded, cgroup_id);
            let Some(event) = self.pods.settle(event, &a, &self.stats) else {
                continue;
            };
            let caused = self.check(loaded, &event, verdict::ALLOWED);
            out.push(event);
            out.extend(caused);
        }
    }

    /// Processes one decoded record against one version of the config.
    /// Nothing comes out while the event waits for its pod's metadata (it
    /// comes out later) or when it is dropped.
    pub fn process(&mut self, record: &Record, out: &mut Out) {
        let loaded = self.live.current();
        let h = *record.header();
        let mut query = None;
        if let Record::Dns(r) = record
            && h.flags & DNS_EGRESS != 0
        {
            // Answers a process serves are only noted.
            let Some(q) = self.on_sent(&loaded, r) else {
                return;
            };
            query = Some(q);
        }
        if let Record::Fork(r) = record {
            let comm = String::from_utf8_lossy(
                &h.comm[..h.comm.iter().position(|&b| b == 0).unwrap_or(16)],
            )
            .into_owned();
            self.procs.on_fork(h.tgid, r.child_tgid, &comm, h.cgroup_id);
        }
        let mut event = decode::to_event(record, &self.clock);
        if let (Record::Dns(r), Payload::DnsAnswer(answer)) = (record, &mut event.payload) {
            match parse_response(&r.payload[..usize::from(r.len).min(r.payload.len())]) {
                Ok(resp) => {
                    answer.id = resp.id;
                    answer.name = resp.name;
                    answer.addresses = resp.addresses;
                    answer.ttl = resp.ttl;
                }
                Err(e) => tracing::debug!("ignoring DNS payload: {e}"),
            }
        }
        if let (Some(q), Payload::DnsQuery(x)) = (query, &mut event.payload) {
            x.id = q.id;
            x.name = q.name;
            x.qtype = q.qtype;
        }
        let attribution = self.attribution(&loaded, h.cgroup_id);
        if let Payload::SessionEscape(x) = &mut event.payload {
            // The cgroup it reached is watched now: its activity there is the
            // session's.
            x.to_cgroup = self.resolver.resolve(x.to_cgroup_id).map(|p| p.to_string());
            self.attributor
                .adopt(x.to_cgroup_id, Arc::clone(&attribution));
        }
        self.enrich(&mut event, &attribution);
        if let Record::Open(r) = record {
            Self::absolutize_open(&mut event, r.dfd);
        }
        if let Record::Link(r) = record {
            complete_link(&mut event, r);
        }
        if let Record::Exit(_) = record {
            self.procs.on_exit(h.tgid);
            // Summaries of the process's repeated opens come before its exit.
            out.extend(self.repeats.on_exit(h.tgid));
        }
        // The kernel decided a blocked event with its attribution already.
        if h.verdict == verdict::ALLOWED {
            let Some(admitted) = self.pods.admit(event, &attribution, &self.stats) else {
                return;
            };
            event = admitted;
            // Only for reports that go out: a summary copies the last one.
            // (An open held for its pod's metadata leaves its count in the
            // kernel, for the next report of the same open.)
            if let Record::Open(r) = record {
                self.repeats.on_report(r, &mut event);
            }
        }
        let caused = self.check(&loaded, &event, h.verdict);
        out.push(event);
        out.extend(caused);
    }

    /// Counts an event and checks it: against its agent's scope, or as
    /// refused by the kernel. Returns what it caused, in order.
    fn check(&mut self, loaded: &Loaded, event: &Event, kernel_verdict: u32) -> Vec<Event> {
        let stats = &self.stats;
        stats.events.fetch_add(1, Ordering::Relaxed);
        if event.identity.agent.is_some() {
            stats.attributed.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.unattributed.fetch_add(1, Ordering::Relaxed);
        }
        if kernel_verdict == verdict::ALLOWED {
            let started = Instant::now();
            let caused = self.evaluate(loaded, event);
            self.metrics.observe_scope_evaluation(started.elapsed());
            caused
        } else {
            self.blocked(loaded, event, kernel_verdict)
        }
    }

    fn enrich(&mut self, event: &mut Event, a: &Attribution) {
        event.identity.agent = a.agent.as_deref().map(str::to_owned);
        event.identity.session = a.session.as_deref().map(str::to_owned);
        event.identity.cgroup = a.cgroup.as_deref().map(str::to_owned);
        event.identity.workload.clone_from(&a.workload);
        if let Some(agent) = &a.agent {
            event.identity.task = self.enforcer.active_task(agent);
        }
        let session_root = a
            .session
            .as_deref()
            .and_then(|s| self.enforcer.sessions().get(s))
            .map_or(0, |s| s.root_pid);
        let Some(process) = event.process.as_mut() else {
            return;
        };
        let tgid = process.pid;
        if let Payload::Exec(exec) = &mut event.payload {
            // A relative exec path is relative to the caller's working directory.
            if !exec.filename.starts_with('/')
                && let Some(abs) = resolve_path(tgid, -100, &exec.filename)
            {
                exec.filename = abs;
            }
            // The kernel names the program from `mm->exe_file`; when its walk
            // could not (a path deeper than it follows), the process's own
            // view is next best, never the file name resolved here.
            if process.exe.is_none() {
                process.exe = crate::identity::procs::proc_link(tgid, "exe")
                    .and_then(|p| p.into_os_string().into_string().ok());
            }
            let exe = process.exe.clone().unwrap_or_else(|| exec.filename.clone());
            self.procs.on_exec(tgid, &exe, &process.comm);
            process.argv.clone_from(&exec.argv);
        }
        if let Some(info) = self.procs.get_or_load(tgid) {
            if process.exe.is_none() {
                process.exe = info.exe.as_deref().map(str::to_owned);
            }
            if process.ppid == 0 {
                process.ppid = info.ppid;
            }
        }
        process.lineage =
            self.procs
                .lineage(tgid, |pid| pid == session_root || pid == 1, LINEAGE_MAX);
    }

    /// Resolves a relative open path against the opener's cwd or dfd.
    fn absolutize_open(event: &mut Event, dfd: i32) {
        let Some(pid) = event.process.as_ref().map(|p| p.pid) else {
            return;
        };
        if let Payload::FileOpen(open) = &mut event.payload
            && !open.path.starts_with('/')
            && let Some(abs) = resolve_path(pid, dfd, &open.path)
        {
            open.raw_path = Some(std::mem::replace(&mut open.path, abs));
        }
    }

    fn anomaly_event(&self, a: Anomaly) -> Event {
        self.stats.anomalies.fetch_add(1, Ordering::Relaxed);
        Event {
            seq: 0,
            time: std::time::SystemTime::now(),
            kernel_ts_ns: a.offending.kernel_ts_ns,
            identity: a.offending.identity.clone(),
            process: a.offending.process.clone(),
            payload: Payload::Anomaly(a),
        }
    }

    /// What is still pending at a stop: events held for pod metadata,
    /// losses not yet reported, and every folded anomaly still inside its
    /// aggregation window (no window closes after the daemon is gone).
    pub fn finish(&mut self, out: &mut Out) {
        let loaded = self.live.current();
        self.release_held(&loaded, true, out);
        self.losses(&loaded, out);
        self.drain_anomalies(out);
    }

    fn drain_anomalies(&mut self, out: &mut Out) {
        let pending = self.aggregator.drain();
        out.extend(pending.into_iter().map(|a| self.anomaly_event(a)));
    }

    /// Anomalies whose aggregation window closed (repeats with their count).
    fn flush_anomalies(&mut self, out: &mut Out) {
        let folded = self.aggregator.flush(Instant::now());
        out.extend(folded.into_iter().map(|a| self.anomaly_event(a)));
    }
}

#[cfg(test)]
mod tests {
    use vigil_common::{ConnectRecord, Header, RecordKind, sock_op};

    use super::*;
    use crate::testing;

    const REVOKING: &str = r#"
[[agent]]
name = "coder"
on_violation = "revoke"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1:8080"]
"#;

    fn connect(cgroup_id: u64, addr: [u8; 4], port: u16) -> Record {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&addr);
        Record::Connect(ConnectRecord {
            header: Header {
                kind: RecordKind::Connect as u16,
                flags: 0,
                verdict: verdict::ALLOWED,
                ts_ns: crate::enforcement::boot_now_ns(),
                cgroup_id,
                pid: std::process::id(),
                tgid: std::process::id(),
                ppid: 1,
                uid: 0,
                gid: 0,
                _pad: 0,
                comm,
            },
            family: libc::AF_INET as u16,
            port,
            protocol: libc::IPPROTO_TCP as u8,
            op: sock_op::CONNECT,
            sock_type: libc::SOCK_STREAM as u8,
            _pad: 0,
            addr: a,
        })
    }

    #[tokio::test]
    async fn an_event_comes_out_before_what_it_caused_and_revokes_in_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let p = testing::parts(dir.path(), REVOKING).await;
        let session = p
            .enforcer
            .sessions()
            .start("coder", Some("s-1"), std::process::id())
            .unwrap();
        let loaded = p.live.current();
        let mut pipeline = Pipeline::new(
            Parts {
                live: Arc::clone(&p.live),
                enforcer: Arc::clone(&p.enforcer),
                stats: Arc::new(Stats::default()),
                metrics: Arc::new(Metrics::default()),
                kube: Kube::start(&loaded.config.kubernetes, "n1"),
                dns: Arc::new(DnsCache::new()),
                repeats: super::super::repeats::Repeats::new(None, Duration::from_secs(1)),
                node_losses: None,
                losses: None,
            },
            p.enforcer.sessions().cgroups(),
        );
        let mut out = Out::new();
        pipeline.process(&connect(session.cgroup_id, [127, 0, 0, 1], 8080), &mut out);
        assert_eq!(out.len(), 1, "in scope: the event alone, {out:?}");
        pipeline.process(&connect(session.cgroup_id, [10, 9, 9, 9], 443), &mut out);
        let kinds: Vec<&str> = out.iter().map(|e| e.payload.kind()).collect();
        assert_eq!(kinds, ["connect", "connect", "revocation", "anomaly"]);
        for e in &out {
            assert_eq!(e.identity.session.as_deref(), Some("s-1"), "{e:?}");
        }
        let Payload::Anomaly(a) = &out[3].payload else {
            unreachable!()
        };
        assert_eq!(a.action, "revoked");
        let Payload::Revocation(r) = &out[2].payload else {
            unreachable!()
        };
        assert!(r.latency_ns.is_some(), "{r:?}");
        assert_eq!(r.by, "on_violation of agent coder");
        // In the kernel's policy at once, for the session's cgroup.
        let policy = p.enforcer.kernel().get(session.cgroup_id);
        assert!(policy.flags & vigil_common::policy::REVOKED != 0);
        // The next violation finds it revoked and revokes nothing more.
        out.clear();
        pipeline.process(&connect(session.cgroup_id, [10, 9, 9, 8], 443), &mut out);
        assert!(
            !out.iter().any(|e| e.payload.kind() == "revocation"),
            "{out:?}"
        );
    }
}
