//! The QoS engine (in progress).
