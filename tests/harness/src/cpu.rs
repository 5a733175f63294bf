//! CPU time of a process, from `/proc/PID/stat`.

use std::time::Duration;

use anyhow::Context as _;

/// CPU time (user and system) `pid` has used so far, in clock ticks.
pub fn ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = i32::try_from(pid)
        .ok()
        .and_then(|pid| procfs::process::Process::new(pid).ok())
        .with_context(|| format!("no process {pid}"))?
        .stat()
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    Ok(stat.utime + stat.stime)
}

fn ns_per_tick() -> u64 {
    1_000_000_000 / procfs::ticks_per_second().max(1)
}

/// How long a clock tick of [`ticks`] is (`USER_HZ`).
#[must_use]
pub fn tick() -> Duration {
    Duration::from_nanos(ns_per_tick())
}

/// CPU time `pid` has used so far.
pub fn time(pid: u32) -> anyhow::Result<Duration> {
    Ok(Duration::from_nanos(
        ticks(pid)?.saturating_mul(ns_per_tick()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_cpu_time() {
        // Burn well over a tick.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let me = std::process::id();
        assert!(ticks(me).unwrap() > 0);
        assert!(time(me).unwrap() >= tick());
        assert!(ticks(u32::MAX).is_err());
    }
}
