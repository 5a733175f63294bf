//! The durable, sequenced event journal ([`store`]) and the hub that feeds
//! subscribers from it ([`hub`]), with their server-side filter ([`filter`]).
//! Events pass through both as [`encoded`] bytes, made once when journaled.
//! The [`publisher`] is the one way in: it journals, writes the outputs and
//! keeps the per-agent [`counters`].

pub mod counters;
pub mod encoded;
pub mod filter;
pub mod hub;
pub mod publisher;
pub mod repair;
pub mod store;

#[cfg(test)]
pub(crate) mod testing;

pub use encoded::{Encoded, EncodedError};
pub use filter::{Fields, Filter, FilterError};
pub use hub::{Hub, HubConfig, HubError, HubStats, JournalLoss, Start, Subscription};
pub use store::{Journal, JournalError, JournalReader, JournalStats, Page, Pruned, Retention};
