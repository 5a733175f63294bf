//! Vigil's public gRPC API: the generated `vigil.v1` types and services
//! ([`pb`]), the conversions between them and the daemon's typed events
//! ([`convert`]), the services ([`events`], [`governance`], [`node`]), the
//! transports ([`server`], [`tls`], and [`authority`] for clients that
//! name the local socket by its path) with their access control ([`auth`]),
//! and the client side ([`client`], [`render`]).

pub mod agents;
pub mod auth;
pub mod authority;
pub mod client;
pub mod convert;
pub mod events;
pub mod governance;
pub mod node;
pub mod pb;
pub mod render;
pub mod server;
pub mod tls;
