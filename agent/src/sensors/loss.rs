//! Records the ring buffer had no room for, per cgroup: a session that
//! floods the ring to hide one action among the lost records is named by
//! what it lost, not only counted in the node's total.

use std::collections::HashMap;

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use vigil_common::{LossKey, SENSOR_COUNT, SENSOR_NAMES};

use super::SensorError;

/// The node's loss counters, one per sensor (`LOSS`).
pub struct NodeLosses {
    map: PerCpuArray<MapData, u64>,
}

impl NodeLosses {
    pub(super) const fn new(map: PerCpuArray<MapData, u64>) -> Self {
        Self { map }
    }

    /// Records lost per sensor since load, summed over CPUs.
    pub fn read(&self) -> Result<[(&'static str, u64); SENSOR_COUNT as usize], SensorError> {
        let mut out = [("", 0); SENSOR_COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let values = self
                .map
                .get(&(i as u32), 0)
                .map_err(|source| SensorError::Map {
                    map: "LOSS",
                    source,
                })?;
            *slot = (SENSOR_NAMES[i], values.iter().sum());
        }
        Ok(out)
    }
}

/// Records of one sensor lost for one cgroup since the previous poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLoss {
    pub cgroup_id: u64,
    pub sensor: &'static str,
    /// Lost since the previous poll.
    pub lost: u64,
    /// Lost since the daemon started (as far as the kernel's LRU map kept it).
    pub total: u64,
}

/// The kernel's per-cgroup loss counters and what was reported of them.
pub struct SessionLosses {
    map: PerCpuHashMap<MapData, LossKey, u64>,
    seen: Totals,
}

impl SessionLosses {
    pub(super) fn new(map: PerCpuHashMap<MapData, LossKey, u64>) -> Self {
        Self {
            map,
            seen: Totals::default(),
        }
    }

    /// What was lost since the previous poll, per cgroup and sensor.
    pub fn poll(&mut self) -> Result<Vec<CgroupLoss>, SensorError> {
        let mut now = Vec::new();
        for entry in &self.map {
            let (key, values) = entry.map_err(|source| SensorError::Map {
                map: "LOSS_BY_CGROUP",
                source,
            })?;
            now.push((key, values.iter().sum()));
        }
        Ok(self.seen.advance(&now))
    }
}

/// Totals per key as last read; the difference to a new reading is what is
/// reported.
#[derive(Debug, Default)]
struct Totals {
    last: HashMap<(u64, u32), u64>,
}

impl Totals {
    fn advance(&mut self, reading: &[(LossKey, u64)]) -> Vec<CgroupLoss> {
        let mut out = Vec::new();
        let mut next = HashMap::with_capacity(reading.len());
        for (key, total) in reading {
            if key.sensor >= SENSOR_COUNT {
                continue;
            }
            let id = (key.cgroup_id, key.sensor);
            let before = self.last.get(&id).copied().unwrap_or(0);
            // A smaller total is an entry the LRU evicted and the kernel
            // started again from zero: all of it is new.
            let lost = if *total >= before {
                total - before
            } else {
                *total
            };
            if lost > 0 {
                out.push(CgroupLoss {
                    cgroup_id: key.cgroup_id,
                    sensor: SENSOR_NAMES[key.sensor as usize],
                    lost,
                    total: *total,
                });
            }
            next.insert(id, *total);
        }
        // Keys the kernel evicted are forgotten with it, so this stays
        // bounded by the map's capacity.
        self.last = next;
        out.sort_by_key(|l| (l.cgroup_id, l.sensor));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cgroup_id: u64, sensor: u32) -> LossKey {
        LossKey {
            cgroup_id,
            sensor,
            _pad: 0,
        }
    }

    #[test]
    fn reports_each_cgroups_new_losses_once() {
        let mut t = Totals::default();
        let first = t.advance(&[(key(7, 2), 5), (key(9, 0), 1)]);
        assert_eq!(
            first,
            [
                CgroupLoss {
                    cgroup_id: 7,
                    sensor: "file",
                    lost: 5,
                    total: 5
                },
                CgroupLoss {
                    cgroup_id: 9,
                    sensor: "process",
                    lost: 1,
                    total: 1
                },
            ]
        );
        // Nothing new: nothing to report.
        assert!(t.advance(&[(key(7, 2), 5), (key(9, 0), 1)]).is_empty());
        let more = t.advance(&[(key(7, 2), 12), (key(9, 0), 1)]);
        assert_eq!(more.len(), 1);
        assert_eq!((more[0].lost, more[0].total), (7, 12));
    }

    #[test]
    fn an_evicted_and_recreated_entry_counts_from_zero() {
        let mut t = Totals::default();
        t.advance(&[(key(7, 2), 50)]);
        // Evicted, then 3 more lost: the kernel's total restarts at 3.
        let again = t.advance(&[(key(7, 2), 3)]);
        assert_eq!((again[0].lost, again[0].total), (3, 3));
        // Gone from the kernel: forgotten here too.
        assert!(t.advance(&[]).is_empty());
        assert!(t.last.is_empty());
    }

    #[test]
    fn unknown_sensors_are_skipped() {
        let mut t = Totals::default();
        assert!(t.advance(&[(key(7, SENSOR_COUNT), 4)]).is_empty());
    }
}
