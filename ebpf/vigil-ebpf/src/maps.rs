//! Maps and the load-time configuration shared by every program.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use vigil_common::{KernelConfig, SENSOR_COUNT, Sensor};

use crate::abi::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};

/// Load-time settings; the loader overrides this read-only global, so the
/// verifier sees its fields as constants.
#[unsafe(no_mangle)]
static VIGIL_CONFIG: KernelConfig = KernelConfig::zeroed();

/// The load-time configuration. Its address goes through a volatile read,
/// so the compiler cannot tell which static it points to and fold the
/// zeroed initial value; the fields are then plain loads from the read-only
/// map, which the verifier reads as constants. No copy of the whole struct
/// (about 200 bytes) is made per program run.
#[inline(always)]
pub fn config() -> &'static KernelConfig {
    let at: *const KernelConfig = &raw const VIGIL_CONFIG;
    // SAFETY: a volatile read of a local, then a shared reference to a
    // static that nothing writes after load.
    unsafe { &*core::ptr::read_volatile(&raw const at) }
}

/// Every record goes here; the daemon reads it asynchronously. The loader
/// sets the size from `daemon.ring_buffer_bytes`.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Records that could not be reserved, per sensor and CPU.
#[map]
pub static LOSS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SENSOR_COUNT, 0);

/// cgroup ids watched because the config matched them (value: `watch::*`).
#[map]
pub static WATCHED: HashMap<u64, u32> = HashMap::pinned(16384, 0);

/// Submit flags for a record: wake the reader now when the record is urgent
/// or the ring buffer is filling up, else leave it for the reader's next
/// round (see [`KernelConfig::wake_bytes`]).
#[inline(always)]
pub fn wake_flags(cfg: &KernelConfig, urgent: bool) -> u64 {
    if cfg.wake_bytes == 0 {
        return 0;
    }
    if urgent || EVENTS.query(BPF_RB_AVAIL_DATA) >= u64::from(cfg.wake_bytes) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Counts a record the ring buffer had no room for.
#[inline(always)]
pub fn count_loss(sensor: Sensor) {
    if let Some(n) = LOSS.get_ptr_mut(sensor as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *n += 1 };
    }
}
