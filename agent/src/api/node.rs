//! `NodeService`: the daemon's own health, coverage and loss.

use std::path::PathBuf;
use std::sync::{Arc, atomic::Ordering};
use std::time::SystemTime;

use tonic::{Request, Response, Status};

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

pub(crate) fn timestamp(t: std::time::SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
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
        let mut sensors = Vec::new();
        for (i, name) in vigil_common::SENSOR_NAMES.iter().enumerate() {
            let programs: Vec<pb::ProgramStatus> = states
                .iter()
                .filter(|p| p.sensor == *name)
                .map(|p| pb::ProgramStatus {
                    program: p.program.to_owned(),
                    hook: p.hook.clone(),
                    attached: p.attached,
                    link_id: p.link_id,
                    pinned: p.pinned,
                    reattached: p.reattached,
                    error: p.error.clone().unwrap_or_default(),
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
        let kernel_features = s
            .sensors
            .attached()
            .iter()
            .map(|h| pb::KernelFeature {
                name: h.clone(),
                available: true,
                detail: String::new(),
            })
            .collect();
        Ok(Response::new(pb::StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            node: s.node.clone(),
            started_at: Some(timestamp(s.started)),
            config: Some(pb::ConfigStatus {
                version: loaded.version.to_string(),
                path: live_status.path,
                loaded_at: Some(timestamp(loaded.loaded_at)),
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
