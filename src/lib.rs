//! libmqtt: an MQTT 3.1.1 client with a C ABI.
//!
//! Layers, one direction: `ffi` (the C boundary) -> `client` (safe Rust API)
//! -> `reactor` (mio: one poll for any number of clients; transport,
//! connection state machine, timers, command intake) -> `dispatch` (the
//! callback rules) and `protocol` (sans-IO codec, topics and QoS engine).

pub mod client;
pub mod dispatch;
pub mod error;
pub mod ffi;
pub mod log;
pub mod protocol;
pub mod reactor;
#[cfg(feature = "tls")]
pub mod tls;

pub use client::{Client, Resolver};
pub use dispatch::{Command, Data, MessageView};
pub use error::{Error, Result};
pub use protocol::codec::QoS;
pub use reactor::Reactor;
#[cfg(feature = "tls")]
pub use tls::{PemSource, TlsOptions};
