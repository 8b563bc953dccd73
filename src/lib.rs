//! libmqtt: an MQTT 3.1.1 client with a C ABI.

pub mod protocol;
