//! Records the kernel had no room for, reported as `loss` events: the
//! node's per sensor, and each session's.

use std::sync::atomic::Ordering;

use super::{Out, Pipeline};
use crate::event::Payload;
use crate::live::Loaded;
use crate::sensors::loss::NodeLosses;

impl Pipeline {
    /// `loss` events for records the kernel dropped since the last look:
    /// first the node's, per sensor (also the figure `vigil status` shows),
    /// then one for each session (cgroup) that lost records, attributed
    /// like the records it lost would have been.
    pub(super) fn losses(&mut self, loaded: &Loaded, out: &mut Out) {
        match self.node_losses.as_ref().map(NodeLosses::read) {
            None => {}
            Some(Ok(counters)) => {
                for (i, (sensor, total)) in counters.into_iter().enumerate() {
                    let before = self.stats.lost[i].swap(total, Ordering::Relaxed);
                    if total > before {
                        tracing::warn!(
                            "{} kernel records of the {sensor} sensor lost (ring buffer full)",
                            total - before
                        );
                        out.push(crate::event::Event::daemon(
                            crate::event::Identity::default(),
                            Payload::Loss(crate::event::Loss {
                                sensor: sensor.to_owned(),
                                lost: total - before,
                                total,
                            }),
                        ));
                    }
                }
            }
            Some(Err(e)) => tracing::warn!("reading loss counters: {e}"),
        }
        let Some(losses) = self.losses.as_mut() else {
            return;
        };
        let found = match losses.poll() {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("reading per-cgroup loss counters: {e}");
                return;
            }
        };
        out.extend(found.into_iter().map(|l| {
            let a = self.attribution(loaded, l.cgroup_id);
            tracing::warn!(
                "{} kernel records of the {} sensor lost for cgroup {} (agent {}, session {})",
                l.lost,
                l.sensor,
                a.cgroup.as_deref().unwrap_or("?"),
                a.agent.as_deref().unwrap_or("-"),
                a.session.as_deref().unwrap_or("-"),
            );
            let identity = crate::event::Identity {
                agent: a.agent.as_deref().map(str::to_owned),
                session: a.session.as_deref().map(str::to_owned),
                cgroup: a.cgroup.as_deref().map(str::to_owned),
                cgroup_id: l.cgroup_id,
                task: a
                    .agent
                    .as_deref()
                    .and_then(|agent| self.enforcer.active_task(agent)),
                workload: a.workload.clone(),
            };
            crate::event::Event::daemon(
                identity,
                Payload::Loss(crate::event::Loss {
                    sensor: l.sensor.to_owned(),
                    lost: l.lost,
                    total: l.total,
                }),
            )
        }));
    }
}
