//! libmqtt: an MQTT 3.1.1 client with a C ABI.
//!
//! Layers, one direction: `ffi` (the C boundary) -> `client` (safe Rust API) ->
//! `reactor` (mio, sockets, timers) and `dispatch` (the callback rules) ->
//! `protocol` (sans-IO codec, topics and QoS engine).

pub mod client;
pub mod dispatch;
pub mod error;
pub mod ffi;
pub mod log;
pub mod protocol;
mod reactor;
pub mod store;
#[cfg(feature = "tls")]
pub mod tls;

pub use client::{Client, Resolver};
pub use dispatch::{Command, Data, MessageView};
pub use error::{Error, Result};
pub use protocol::codec::QoS;
#[cfg(feature = "tls")]
pub use tls::{PemSource, TlsOptions};
