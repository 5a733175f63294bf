//! Who is acting: maps kernel-side identifiers (cgroup ids, tgids) to the
//! paths, workloads and process lineage that events are attributed with.
//!
//! - [`attribute`]: which agent and session a cgroup belongs to;
//! - [`cgroup`]: the cgroup v2 mount, the cgroups the daemon owns, id → path
//!   resolution and container/pod identity from runtime naming;
//! - [`procs`]: the process table (parent, executable, lineage) and path
//!   resolution for relative opens.

pub mod attribute;
pub mod cgroup;
pub mod procs;
