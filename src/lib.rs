//! libmqtt: an MQTT 3.1.1 client with a C ABI.

pub mod error;
pub mod protocol;

pub use error::{Error, Result};
