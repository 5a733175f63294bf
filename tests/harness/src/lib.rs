//! What the integration tests (`vigil-tests`), `cargo xtask demo` and
//! `cargo xtask bench` share to run a real Vigil daemon of their own: its
//! binaries, a config with a private socket, state, event file, cgroup
//! parent and pin directory ([`Layout`]), the daemon process ([`Daemon`]),
//! `vigil` client commands against it, agent sessions driven one action at
//! a time ([`Served`]), the cgroups they leave ([`cgroup`]), and the
//! statistics of the benchmarks ([`stats`]).
//!
//! It talks to the daemon only through the `vigil` binary and the files it
//! writes, never through the `vigil` crate, so that xtask can use it before
//! the daemon can be built.

mod bins;
pub mod bpf_stats;
pub mod cgroup;
mod config;
pub mod cpu;
mod daemon;
pub mod events;
pub mod names;
mod served;
pub mod stats;

pub use bins::{Binaries, vigil_bin, workload_bin};
pub use config::{Events, Layout, toml_string};
pub use daemon::{Daemon, START_TIMEOUT, Stop, every};
pub use served::Served;
