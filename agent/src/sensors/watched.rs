//! The cgroups the programs report outside sessions: the kernel's
//! `WATCHED` set, kept by the daemon's cgroup walk.

use std::sync::Mutex;

use aya::maps::{HashMap, MapData};

use super::SensorError;

/// The cgroups the programs report outside sessions (`WATCHED`).
pub struct Watched {
    pub(super) map: Mutex<HashMap<MapData, u64, u32>>,
}

impl Watched {
    /// Starts reporting activity of a cgroup (and only that cgroup, not its children).
    pub fn watch(&self, cgroup_id: u64) -> Result<(), SensorError> {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(cgroup_id, vigil_common::watch::CONFIGURED, 0)
            .map_err(|source| SensorError::Map {
                map: "WATCHED",
                source,
            })
    }

    /// Stops reporting a cgroup added with [`Watched::watch`].
    pub fn unwatch(&self, cgroup_id: u64) -> Result<(), SensorError> {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(&cgroup_id, 0).is_err() {
            return Ok(());
        }
        map.remove(&cgroup_id).map_err(|source| SensorError::Map {
            map: "WATCHED",
            source,
        })
    }
}
