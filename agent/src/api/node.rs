//! `NodeService`: the daemon's own health, coverage and loss.

use std::path::PathBuf;
use std::sync::{Arc, atomic::Ordering};
use std::time::SystemTime;

use tonic::{Request, Response, Status};

use crate::export::{Exports, SinkStatus};
use crate::journal::Hub;
use crate::kube::Kube;
use crate::live::LiveConfig;
use crate::sensors::SensorState;
use crate::stats::Stats;
use crate::wire::pb;

/// What `Status` reports on.
#[derive(Clone)]
pub struct NodeParts {
    /// The node name events carry.
    pub node: String,
    pub started: SystemTime,
    pub live: Arc<LiveConfig>,
    pub sensors: Arc<dyn SensorState>,
    pub stats: Arc<Stats>,
    /// Pod identity, for its warnings.
    pub kube: Kube,
    pub hub: Hub,
    /// The journal file.
    pub journal_path: PathBuf,
    pub exports: Exports,
}

#[derive(Clone)]
pub struct Node {
    parts: Arc<NodeParts>,
}

impl Node {
    #[must_use]
    pub fn new(parts: NodeParts) -> Self {
        Self {
            parts: Arc::new(parts),
        }
    }
}

#[tonic::async_trait]
impl pb::node_service_server::NodeService for Node {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = &*self.parts;
        let loaded = s.live.current();
        let states = s.sensors.programs();
        let runs = s.sensors.program_runs();
        let mut sensors = Vec::new();
        for (i, name) in vigil_common::SENSOR_NAMES.iter().enumerate() {
            let programs: Vec<pb::ProgramStatus> = states
                .iter()
                .filter(|p| p.sensor == *name)
                .map(|p| {
                    let (run_count, run_time_ns) =
                        runs.get(&p.program_id).copied().unwrap_or_default();
                    pb::ProgramStatus {
                        program: p.program.to_owned(),
                        hook: p.hook.clone(),
                        attached: p.attached,
                        link_id: p.link_id,
                        pinned: p.pinned,
                        reattached: p.reattached,
                        error: p.error.clone().unwrap_or_default(),
                        program_id: p.program_id,
                        run_count,
                        run_time_ns,
                    }
                })
                .collect();
            let detached: Vec<&str> = programs
                .iter()
                .filter(|p| !p.attached)
                .map(|p| p.program.as_str())
                .collect();
            sensors.push(pb::SensorStatus {
                name: (*name).to_owned(),
                attached: !programs.is_empty() && detached.is_empty(),
                error: if detached.is_empty() {
                    String::new()
                } else {
                    format!("detached: {}", detached.join(", "))
                },
                lost: s.stats.lost[i].load(Ordering::Relaxed),
                records: 0,
                programs,
            });
        }
        let (live_status, mut warnings) = s.live.status();
        warnings.extend(s.kube.warnings());
        let kernel_features =
            s.sensors
                .attached()
                .iter()
                .map(|h| pb::KernelFeature {
                    name: h.clone(),
                    available: true,
                    detail: String::new(),
                })
                .chain(s.sensors.unavailable().into_iter().map(|(name, detail)| {
                    pb::KernelFeature {
                        name,
                        available: false,
                        detail,
                    }
                }))
                .collect();
        Ok(Response::new(pb::StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            node: s.node.clone(),
            started_at: Some(s.started.into()),
            config: Some(pb::ConfigStatus {
                version: loaded.version.to_string(),
                path: live_status.path,
                loaded_at: Some(loaded.loaded_at.into()),
                load_errors: live_status.last_error.into_iter().collect(),
                reloads: live_status.reloads,
                reload_failures: live_status.failures,
            }),
            sensors,
            kernel_features,
            attribution: Some(pb::AttributionCoverage {
                attributed: s.stats.attributed.load(Ordering::Relaxed),
                unattributed: s.stats.unattributed.load(Ordering::Relaxed),
                without_pod_identity: s.stats.without_pod_identity.load(Ordering::Relaxed),
            }),
            journal: Some(journal_status(s, &loaded.config.journal)),
            subscribers: u32::try_from(s.hub.stats().subscribers).unwrap_or(u32::MAX),
            warnings,
            sensor_tampers: s.sensors.tampers(),
            last_tamper: s.sensors.last_tamper().unwrap_or_default(),
            exports: s.exports.status().into_iter().map(Into::into).collect(),
            program_stats: s.sensors.program_stats(),
        }))
    }
}

/// The journal's size, bounds and counters, and the retention in force.
fn journal_status(s: &NodeParts, config: &crate::config::JournalConfig) -> pb::JournalStatus {
    let stats = s.hub.stats();
    let retention = config.retention();
    pb::JournalStatus {
        path: s.journal_path.display().to_string(),
        size_bytes: stats.journal.size_bytes,
        oldest_sequence: stats.journal.oldest_seq.unwrap_or(0),
        newest_sequence: stats.journal.last_seq,
        pruned_events: stats.journal.pruned_events,
        gaps_sent: stats.gaps_sent,
        max_bytes: retention.max_bytes.unwrap_or(0),
        max_age: retention
            .max_age
            .and_then(|a| prost_types::Duration::try_from(a).ok()),
    }
}

impl From<SinkStatus> for pb::ExportStatus {
    fn from(s: SinkStatus) -> Self {
        Self {
            name: s.name,
            r#type: s.kind.to_owned(),
            endpoint: s.endpoint,
            format: s.format.as_str().to_owned(),
            position: s.position,
            lag: s.lag,
            exported: s.exported,
            retries: s.retries,
            rejected: s.rejected,
            skipped: s.skipped,
            failing: s.failing,
            error: s.error.unwrap_or_default(),
            warning: s.warning.unwrap_or_default(),
            last_success: s.last_success.map(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::ProgramState;
    use crate::testing;
    use crate::wire::pb::node_service_server::NodeService as _;

    /// Sensors as the kernel would report them: one program detached.
    struct Reported;

    impl SensorState for Reported {
        fn programs(&self) -> Vec<ProgramState> {
            let state = |program, attached| ProgramState {
                sensor: "network",
                program,
                hook: format!("cgroup/{program}"),
                attached,
                link_id: if attached { 7 } else { 0 },
                pinned: true,
                reattached: 0,
                error: None,
                program_id: if attached { 40 } else { 41 },
            };
            vec![
                state("vigil_connect4", true),
                state("vigil_connect6", false),
            ]
        }

        fn attached(&self) -> Vec<String> {
            vec!["network: vigil_connect4 -> cgroup/connect4".into()]
        }

        fn tampers(&self) -> u64 {
            2
        }

        fn last_tamper(&self) -> Option<String> {
            Some("link of vigil_connect6 detached".into())
        }

        fn ring_buffer_bytes(&self) -> u32 {
            1 << 20
        }

        fn unavailable(&self) -> Vec<(String, String)> {
            vec![("cgroup connect_unix".into(), "BPF_PROG_LOAD: EINVAL".into())]
        }
    }

    #[tokio::test]
    async fn status_reports_sensors_attribution_and_journal() {
        let dir = tempfile::tempdir().unwrap();
        let live = testing::live(dir.path(), testing::AGENTS);
        let hub = testing::hub(dir.path());
        let stats = Arc::new(Stats::default());
        stats.attributed.store(9, Ordering::Relaxed);
        stats.unattributed.store(1, Ordering::Relaxed);
        stats.lost[1].store(5, Ordering::Relaxed);
        let kube = Kube::start(&live.current().config.kubernetes, "n1");
        let node = Node::new(NodeParts {
            node: "n1".into(),
            started: SystemTime::now(),
            live: Arc::clone(&live),
            sensors: Arc::new(Reported),
            stats,
            kube,
            hub: hub.clone(),
            journal_path: dir.path().join("journal.redb"),
            exports: crate::export::Exports::new(hub, "n1".into(), dir.path().join("export")),
        });
        let s = node
            .status(Request::new(pb::StatusRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.node, "n1");
        let network = s.sensors.iter().find(|x| x.name == "network").unwrap();
        assert!(!network.attached);
        assert_eq!(network.error, "detached: vigil_connect6");
        assert_eq!(network.programs.len(), 2);
        assert_eq!(s.sensors[1].lost, 5);
        assert_eq!(
            (s.sensor_tampers, s.last_tamper.as_str()),
            (2, "link of vigil_connect6 detached")
        );
        // What is attached, then what this kernel lacks, with why.
        let features: Vec<_> = s
            .kernel_features
            .iter()
            .map(|f| (f.name.as_str(), f.available, f.detail.as_str()))
            .collect();
        assert_eq!(
            features,
            [
                ("network: vigil_connect4 -> cgroup/connect4", true, ""),
                ("cgroup connect_unix", false, "BPF_PROG_LOAD: EINVAL"),
            ]
        );
        let a = s.attribution.unwrap();
        assert_eq!((a.attributed, a.unattributed), (9, 1));
        let config = s.config.unwrap();
        assert_eq!(config.version, "1");
        assert!(config.path.ends_with("vigil.toml"), "{}", config.path);
        let journal = s.journal.unwrap();
        assert!(journal.path.ends_with("journal.redb"), "{}", journal.path);
        assert_eq!(journal.newest_sequence, 0);
    }
}
