//! Vigil's public gRPC API: the generated `vigil.v1` types and services
//! ([`pb`]) and the conversions between them and the daemon's typed events
//! ([`convert`]).

pub mod client;
pub mod convert;
pub mod governance;
pub mod node;
pub mod pb;
pub mod server;
