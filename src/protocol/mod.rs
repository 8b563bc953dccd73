//! The sans-IO protocol core: no sockets, no threads, no clock reads.

pub mod codec;
mod outbox;
pub mod properties;
pub mod session;
pub mod short_str;
pub(crate) mod stamp;
mod subscriptions;
pub mod topic;
pub mod v5;
