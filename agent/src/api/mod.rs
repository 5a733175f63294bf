//! Vigil's public gRPC API: the services ([`events`], [`governance`],
//! [`node`]), the transports ([`server`], [`tls`], and [`authority`] for
//! clients that name the local socket by its path) with their access
//! control ([`auth`]) and request checks ([`requests`]), and the client side ([`client`], [`render`]). The
//! wire types themselves are in [`crate::wire`], below the journal.

pub mod agents;
pub mod auth;
pub mod authority;
pub mod client;
pub mod events;
pub mod governance;
pub mod node;
pub mod render;
pub mod requests;
pub mod server;
pub mod tls;

/// The generated `vigil.v1` types, where API clients look for them.
pub use crate::wire::pb;
