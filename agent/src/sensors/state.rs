//! What the sensors report about themselves: each program's state as the
//! kernel tells it, and the tampering the guard found. [`SensorState`] is
//! the narrow view that `vigil status` and the metrics read, so they can be
//! built (and tested) without the programs loaded.

use std::sync::Arc;

use super::Sensors;

/// What the kernel says about one of the daemon's links now.
#[derive(Clone, Debug)]
pub struct ProgramState {
    pub sensor: &'static str,
    pub program: &'static str,
    pub hook: String,
    /// The program is attached to its hook (from the link's kernel info).
    pub attached: bool,
    /// Kernel id of the link, 0 when it could not be queried.
    pub link_id: u32,
    /// Its pin is in place.
    pub pinned: bool,
    /// Times it was attached anew after a detach.
    pub reattached: u64,
    /// Why the state could not be read.
    pub error: Option<String>,
    /// Kernel id of the program, 0 when it could not be queried.
    pub program_id: u32,
}

/// The sensors' own state.
pub trait SensorState: Send + Sync {
    /// Each link's state, asked of the kernel.
    fn programs(&self) -> Vec<ProgramState>;
    /// Each attached hook, as `sensor: program -> hook`.
    fn attached(&self) -> Vec<String>;
    /// Tamperings found since load.
    fn tampers(&self) -> u64;
    /// The last tampering, in words.
    fn last_tamper(&self) -> Option<String>;
    /// Size of the ring buffer as loaded.
    fn ring_buffer_bytes(&self) -> u32;
    /// The kernel counts programs' run time now.
    fn program_stats(&self) -> bool {
        false
    }
    /// Runs and run time (ns) of the node's programs by kernel id, as the
    /// kernel counts them while `kernel.bpf_stats_enabled` is on. Apart from
    /// [`SensorState::programs`], which the metrics read on every scrape:
    /// this asks the kernel about every program on the node.
    fn program_runs(&self) -> std::collections::HashMap<u32, (u64, u64)> {
        std::collections::HashMap::new()
    }
    /// Kernel features the sensors could not use, with why.
    fn unavailable(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

impl SensorState for Sensors {
    fn programs(&self) -> Vec<ProgramState> {
        Self::programs(self)
    }

    fn attached(&self) -> Vec<String> {
        Self::attached(self).to_vec()
    }

    fn tampers(&self) -> u64 {
        Self::tampers(self)
    }

    fn last_tamper(&self) -> Option<String> {
        Self::last_tamper(self)
    }

    fn ring_buffer_bytes(&self) -> u32 {
        self.ring_buffer_bytes
    }

    fn program_stats(&self) -> bool {
        super::guard::program_stats_enabled()
    }

    fn program_runs(&self) -> std::collections::HashMap<u32, (u64, u64)> {
        super::guard::program_runs()
    }

    fn unavailable(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let super::unix::UnixHooks::Unavailable(why) = self.unix_hooks() {
            out.push((
                "cgroup connect_unix/sendmsg_unix (unix sockets as systems, Linux 6.7+)".to_owned(),
                why.clone(),
            ));
        }
        if let Err(why) = self.typed_reads() {
            out.push((
                "typed kernel reads (bpf_rdonly_cast to untrusted memory, Linux 6.17+)".to_owned(),
                why.clone(),
            ));
        }
        out
    }
}

/// The sensors' figures for the Prometheus endpoint.
pub struct Figures(pub Arc<dyn SensorState>);

impl std::fmt::Debug for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("sensors::Figures").finish_non_exhaustive()
    }
}

impl prometheus_client::collector::Collector for Figures {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use crate::metrics::{counter, gauge, gauge_with_unit};
        counter(
            &mut enc,
            "sensor_tampers",
            "Pins under pin_dir removed or replaced, and links detached, while the daemon ran",
            self.0.tampers(),
        )?;
        gauge(
            &mut enc,
            "sensor_programs_detached",
            "Links of the daemon the kernel reports detached from their hooks now",
            self.0.programs().iter().filter(|p| !p.attached).count() as u64,
        )?;
        gauge_with_unit(
            &mut enc,
            "ring_buffer_size",
            "Size of the kernel ring buffer",
            &prometheus_client::registry::Unit::Bytes,
            u64::from(self.0.ring_buffer_bytes()),
        )
    }
}
