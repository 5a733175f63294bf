//! Vigil: runtime governance for AI agents.
//!
//! The daemon is a library with one module per job; `main.rs` only parses
//! the command line and calls into it.
//!
//! - [`sensors`]: loads the eBPF programs and decodes their records;
//! - [`identity`]: maps cgroups and processes to agents, sessions and workloads;
//! - [`config`] and [`scope`]: the declared boundary of each agent and the
//!   engine that compares runtime actions with it;
//! - [`journal`]: the durable, sequenced event store;
//! - [`export`]: `[[export]]` sinks that deliver the journal to collectors (OTLP);
//! - [`kube`]: pod identity from the Kubernetes API server;
//! - [`metrics`]: the Prometheus endpoint;
//! - [`api`]: the gRPC services and the CLI client;
//! - [`enforcement`]: what is revoked, and (later) its kernel side;
//! - [`daemon`]: wires them into `vigil run`.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod enforcement;
pub mod event;
pub mod export;
pub mod identity;
pub mod journal;
pub mod kube;
pub mod live;
pub mod metrics;
pub mod ocsf;
pub mod output;
pub mod paths;
pub mod scope;
pub mod sensors;
pub mod session;
pub mod stats;
#[cfg(test)]
mod testing;
pub mod wire;
