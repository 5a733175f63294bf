//! `kernel.bpf_stats_enabled` set for a test or a benchmark, the old value
//! put back when the guard drops: the kernel then counts each BPF program's
//! runs and run time, at the cost of two clock reads per run.

use std::io;

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The sysctl as set by [`Counting::set`] until dropped.
pub struct Counting(String);

impl Counting {
    /// Sets the sysctl to `on` and keeps its old value.
    ///
    /// # Errors
    /// When the sysctl cannot be read or written (not root, no BPF).
    pub fn set(on: bool) -> io::Result<Self> {
        let with =
            |e: io::Error, what: &str| io::Error::new(e.kind(), format!("{what} {SYSCTL}: {e}"));
        let old = std::fs::read_to_string(SYSCTL).map_err(|e| with(e, "reading"))?;
        std::fs::write(SYSCTL, if on { "1" } else { "0" }).map_err(|e| with(e, "writing"))?;
        Ok(Self(old.trim().to_owned()))
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(SYSCTL, &self.0) {
            eprintln!("could not put {SYSCTL} back to {}: {e}", self.0);
        }
    }
}
