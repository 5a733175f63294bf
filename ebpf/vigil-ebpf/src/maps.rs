//! Maps and the load-time configuration shared by every program.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{HashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use vigil_common::{KernelConfig, LOSS_BY_CGROUP_ENTRIES, LossKey, SENSOR_COUNT, Sensor};

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

/// Records that could not be reserved, per (cgroup, sensor) and CPU.
#[map]
pub static LOSS_BY_CGROUP: LruPerCpuHashMap<LossKey, u64> =
    LruPerCpuHashMap::with_max_entries(LOSS_BY_CGROUP_ENTRIES, 0);

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
    if urgent || EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= u64::from(cfg.wake_bytes) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Counts a record the ring buffer had no room for, for the node and for
/// the cgroup whose record it was.
#[inline(always)]
pub fn count_loss(sensor: Sensor, cgroup_id: u64) {
    if let Some(n) = LOSS.get_ptr_mut(sensor as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *n += 1 };
    }
    let key = LossKey {
        cgroup_id,
        sensor: sensor as u32,
        _pad: 0,
    };
    match LOSS_BY_CGROUP.get_ptr_mut(key) {
        // SAFETY: this CPU's value of a live entry, no concurrent writer on it.
        Some(n) => unsafe { *n += 1 },
        None => {
            // A new entry holds 1 on this CPU and 0 on the others. Another
            // CPU creating it first makes this insert fail: one count of a
            // burst is then missing from the cgroup's share (the node's
            // counter above still has it).
            let _ = LOSS_BY_CGROUP.insert(key, 1, u64::from(BPF_NOEXIST));
        }
    }
}
