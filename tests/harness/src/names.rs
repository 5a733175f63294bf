//! Names of a private daemon's cgroup parent and pin directory.
//!
//! Daemons that may run side by side are named `PREFIX-PID-N`, from the
//! process that started them, so that a later run can tell the leftovers of
//! a process that is gone (pinned programs outlive their daemon by design)
//! from those of one that still runs.

use std::sync::atomic::{AtomicU32, Ordering};

static STARTED: AtomicU32 = AtomicU32::new(0);

/// `PREFIX-PID-N`, unique in this process.
#[must_use]
pub fn unique(prefix: &str) -> String {
    let n = STARTED.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Whether `name` is a [`unique`] name with `prefix` of a process that is not
/// `alive`.
pub fn is_leftover(name: &str, prefix: &str, alive: impl Fn(u32) -> bool) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.split_once('-'))
        .and_then(|(pid, n)| Some((pid.parse::<u32>().ok()?, n.parse::<u32>().ok()?)))
        .is_some_and(|(pid, _)| !alive(pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_carry_the_process_and_a_counter() {
        let (a, b) = (unique("vigil-test"), unique("vigil-test"));
        assert_ne!(a, b);
        let me = std::process::id();
        assert!(a.starts_with(&format!("vigil-test-{me}-")), "{a}");
        assert!(!is_leftover(&a, "vigil-test", |pid| pid == me));
        assert!(is_leftover(&a, "vigil-test", |_| false));
    }

    #[test]
    fn only_names_of_dead_processes_are_leftovers() {
        let alive = |pid| pid == 42;
        assert!(is_leftover("vigil-test-7-0", "vigil-test", alive));
        assert!(is_leftover("vigil-test-7-12", "vigil-test", alive));
        assert!(
            !is_leftover("vigil-test-42-3", "vigil-test", alive),
            "its process runs"
        );
        assert!(
            !is_leftover("vigil-bench-7-0", "vigil-test", alive),
            "not a test's"
        );
        assert!(!is_leftover("vigil-test-7", "vigil-test", alive));
        assert!(!is_leftover("vigil-test-x-0", "vigil-test", alive));
        assert!(!is_leftover("vigil", "vigil-test", alive));
        assert!(!is_leftover("vigil-testing-7-0", "vigil-test", alive));
    }
}
