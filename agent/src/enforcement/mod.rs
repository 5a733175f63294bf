//! Revocation and task approvals. [`state`] is the daemon-side record of
//! what is revoked; the kernel side (maps the eBPF programs consult) comes
//! with the enforcement work and reads from it.

pub mod enforcer;
pub mod kernel;
pub mod state;
