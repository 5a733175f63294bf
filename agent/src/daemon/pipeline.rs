//! The event pipeline: kernel record → typed, enriched, attributed event →
//! scope verdict. It owns all per-event state (process table, cgroup and
//! attribution caches) and runs on one task, so it needs no locks on the hot
//! path and keeps events in kernel order.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use crate::{
    config::OnViolation,
    event::{Anomaly, AnomalyKind, Event, Payload, Severity, Workload},
    scope::{
        Verdict, Violation,
        aggregate::Aggregator,
        dns::{DnsCache, parse_response},
    },
    identity::{
        attribute::{Attribution, Attributor},
        cgroup::{CgroupFs, CgroupResolver},
        procs::{ProcessTable, resolve_path},
    },
    sensors::decode::{self, Clock, Record},
};

use super::Shared;

/// Deepest lineage reported.
const LINEAGE_MAX: usize = 16;

/// What the pipeline did with one record.
pub struct Output {
    pub event: Event,
    /// Anomalies raised by it (already aggregated: repeats are not here).
    pub anomalies: Vec<Event>,
}

pub struct Pipeline {
    shared: Arc<Shared>,
    clock: Clock,
    clock_sampled: Instant,
    procs: ProcessTable,
    resolver: CgroupResolver,
    attributor: Attributor,
    config_version: u64,
    dns: Arc<DnsCache>,
    aggregator: Aggregator,
}

impl Pipeline {
    pub fn new(shared: Arc<Shared>, cgroups: &CgroupFs) -> Self {
        let mut resolver = CgroupResolver::new(cgroups, Duration::from_millis(200));
        let parent = shared.sessions.parent().to_owned();
        let (parent_id, _) = shared.sessions.parent_id_level();
        resolver.insert(parent_id, &parent);
        for s in shared.sessions.list(None) {
            resolver.insert(s.cgroup_id, &s.cgroup);
        }
        let loaded = shared.live.current();
        let config_version = loaded.version;
        let aggregator = Aggregator::new(loaded.scope.aggregate_window());
        let dns = Arc::new(DnsCache::new());
        let live = Arc::clone(&shared.live);
        crate::scope::dns::spawn_resolver(Arc::clone(&dns), move || live.scope());
        Self {
            shared,
            clock: Clock::now(),
            clock_sampled: Instant::now(),
            procs: ProcessTable::new().with_cgroup_fs(cgroups.clone()),
            resolver,
            attributor: Attributor::new(&parent),
            config_version,
            dns,
            aggregator,
        }
    }

    /// Tells the pipeline about a cgroup the daemon just created.
    pub fn learn_cgroup(&mut self, id: u64, path: &str) {
        self.resolver.insert(id, path);
    }

    /// Housekeeping between batches: clock drift, config changes, tombstones.
    pub fn tick(&mut self) {
        if self.clock_sampled.elapsed() > Duration::from_secs(10) {
            self.clock = Clock::now();
            self.clock_sampled = Instant::now();
        }
        let loaded = self.shared.live.current();
        if loaded.version != self.config_version {
            self.config_version = loaded.version;
            self.attributor.clear();
            // Report what the old window held before taking the new one.
            let pending = self.aggregator.drain();
            for a in pending {
                let e = self.anomaly_event(a);
                self.shared.emit(e);
            }
            self.aggregator = Aggregator::new(loaded.scope.aggregate_window());
        }
        for e in self.flush_anomalies() {
            self.shared.emit(e);
        }
        self.procs.sweep();
    }

    /// Decodes and processes one ring-buffer record. A malformed record is
    /// counted and skipped.
    pub fn process_bytes(&mut self, bytes: &[u8]) -> Option<Output> {
        self.shared.stats.records.fetch_add(1, Ordering::Relaxed);
        match decode::decode(bytes) {
            Ok(record) => Some(self.process(&record)),
            Err(e) => {
                let n = self.shared.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                // The first few are logged; all are counted.
                if n < 10 {
                    tracing::warn!("skipping malformed kernel record: {e}");
                }
                None
            }
        }
    }

    fn attribution(&mut self, cgroup_id: u64) -> Arc<Attribution> {
        let loaded = self.shared.live.current();
        let resolver = &mut self.resolver;
        self.attributor.attribute(
            cgroup_id,
            || resolver.resolve(cgroup_id),
            |path| {
                loaded
                    .scope
                    .match_cgroup(path)
                    .map(|id| Arc::from(loaded.scope.agent(id).name.as_str()))
            },
        )
    }

    /// Processes one decoded record.
    pub fn process(&mut self, record: &Record) -> Output {
        let h = *record.header();
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
                    answer.name = resp.name;
                    answer.addresses = resp.addresses;
                    answer.ttl = resp.ttl;
                }
                Err(e) => tracing::debug!("ignoring DNS payload: {e}"),
            }
        }
        let attribution = self.attribution(h.cgroup_id);
        self.enrich(&mut event, &attribution);
        if let Record::Open(r) = record {
            Self::absolutize_open(&mut event, r.dfd);
        }
        if let Record::Exit(_) = record {
            self.procs.on_exit(h.tgid);
        }
        let stats = &self.shared.stats;
        stats.events.fetch_add(1, Ordering::Relaxed);
        if event.identity.agent.is_some() {
            stats.attributed.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.unattributed.fetch_add(1, Ordering::Relaxed);
        }
        let anomalies = self.evaluate(&event);
        Output { event, anomalies }
    }

    fn enrich(&mut self, event: &mut Event, a: &Attribution) {
        event.identity.agent = a.agent.as_deref().map(str::to_owned);
        event.identity.session = a.session.as_deref().map(str::to_owned);
        event.identity.cgroup = a.cgroup.as_deref().map(str::to_owned);
        event.identity.workload.clone_from(&a.workload.as_ref().map(Workload::clone));
        let session_root = a
            .session
            .as_deref()
            .and_then(|s| self.shared.sessions.get(s))
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
        process.lineage = self.procs.lineage(
            tgid,
            |pid| pid == session_root || pid == 1,
            LINEAGE_MAX,
        );
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

    /// Compares an attributed event with its agent's scope; acts on a
    /// violation (`on_violation`) and returns the anomalies to report now.
    fn evaluate(&mut self, event: &Event) -> Vec<Event> {
        let now = Instant::now();
        let loaded = self.shared.live.current();
        let scope = &loaded.scope;
        let violation = match event.identity.agent.as_deref() {
            Some(agent) => {
                if let Payload::DnsAnswer(d) = &event.payload {
                    self.dns.record(agent, &d.name, &d.addresses, d.ttl, now);
                }
                let Some(id) = scope.agent_id(agent) else {
                    // A session of an agent that a reload removed.
                    return self.aggregate(
                        event,
                        Violation {
                            kind: AnomalyKind::Unattributed,
                            severity: Severity::Medium,
                            reason: format!("agent {agent} is no longer declared in the node config"),
                            identity: None,
                        },
                        OnViolation::Alert,
                        now,
                    );
                };
                match scope.evaluate(id, event, &self.dns, now) {
                    Verdict::InScope => return Vec::new(),
                    Verdict::Violation(v) => (v, scope.agent(id).on_violation),
                }
            }
            None if event.process.is_some() => (
                Violation {
                    kind: AnomalyKind::Unattributed,
                    severity: Severity::Low,
                    reason: format!(
                        "activity in watched cgroup {} matches no agent",
                        event.identity.cgroup.as_deref().unwrap_or("(unknown)")
                    ),
                    identity: None,
                },
                OnViolation::Alert,
            ),
            None => return Vec::new(),
        };
        let (v, on_violation) = violation;
        self.aggregate(event, v, on_violation, now)
    }

    /// Acts on a violation and folds it into the aggregator.
    fn aggregate(
        &mut self,
        event: &Event,
        v: Violation,
        on_violation: OnViolation,
        now: Instant,
    ) -> Vec<Event> {
        let action = match on_violation {
            OnViolation::Alert => "observed",
            OnViolation::Kill | OnViolation::Revoke => {
                if on_violation == OnViolation::Revoke {
                    tracing::warn!(
                        "on_violation = \"revoke\" acts as \"kill\" until kernel revocation is enabled"
                    );
                }
                match event.process.as_ref().map(|p| p.pid) {
                    Some(pid) if pid > 1 => {
                        match nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        ) {
                            Ok(()) => "killed",
                            Err(e) => {
                                tracing::warn!("killing pid {pid} after {}: {e}", v.reason);
                                "kill_failed"
                            }
                        }
                    }
                    _ => "observed",
                }
            }
        };
        let anomaly = v.into_anomaly(event.clone(), action);
        self.aggregator
            .observe(anomaly, now)
            .into_iter()
            .map(|a| self.anomaly_event(a))
            .collect()
    }

    fn anomaly_event(&self, a: Anomaly) -> Event {
        self.shared.stats.anomalies.fetch_add(1, Ordering::Relaxed);
        Event {
            seq: 0,
            time: crate::event::format_time(std::time::SystemTime::now()),
            kernel_ts_ns: a.offending.kernel_ts_ns,
            identity: a.offending.identity.clone(),
            process: a.offending.process.clone(),
            payload: Payload::Anomaly(a),
        }
    }

    /// Anomalies whose aggregation window closed (repeats with their count).
    fn flush_anomalies(&mut self) -> Vec<Event> {
        let folded = self.aggregator.flush(Instant::now());
        folded.into_iter().map(|a| self.anomaly_event(a)).collect()
    }
}
