//! The durable, sequenced event journal ([`store`]) and the hub that feeds
//! subscribers from it ([`hub`]), with their server-side filter ([`filter`]).

pub mod filter;
pub mod hub;
pub mod store;

#[cfg(test)]
mod testing;

pub use filter::{Filter, FilterError};
pub use hub::{Hub, HubConfig, HubError, HubStats, Start, Subscription};
pub use store::{Journal, JournalError, JournalReader, JournalStats, Page, Pruned, Retention};
