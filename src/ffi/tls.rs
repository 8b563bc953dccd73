//! The TLS part of the C API (feature `tls`, on by default).

use std::ffi::{c_char, c_int, c_void};
use std::path::Path;

use super::{bytes_arg, client_arg, code, opt_str_arg, str_arg};
use crate::Error;
use crate::ffi::{MQTT_ERR_INTERNAL, mqtt_client};
use crate::tls::{PemSource, TlsOptions};

/// TLS settings for `mqtt_client_set_tls`. Zero-initialise it
/// (`mqtt_tls_options o = {0};`) and set what you need. Each of CA,
/// certificate and key comes from a file (`*_file`, a path) or from memory
/// (`*_pem` + `*_pem_len`, PEM text, not NUL-terminated), not both.
#[repr(C)]
pub struct mqtt_tls_options {
    /// PEM file with the CA certificate(s) the broker's certificate must chain
    /// to. With neither `ca_file` nor `ca_pem`, the system trust store is used.
    pub ca_file: *const c_char,
    /// The same as PEM text in memory.
    pub ca_pem: *const u8,
    pub ca_pem_len: usize,
    /// PEM file with the client certificate chain (leaf first), for brokers
    /// that require client certificates (mosquitto: require_certificate true).
    pub cert_file: *const c_char,
    /// The same as PEM text in memory.
    pub cert_pem: *const u8,
    pub cert_pem_len: usize,
    /// PEM file with the client certificate's private key (PKCS#8, PKCS#1 or
    /// SEC1), unencrypted.
    pub key_file: *const c_char,
    /// The same as PEM text in memory.
    pub key_pem: *const u8,
    pub key_pem_len: usize,
    /// The name sent as SNI and checked against the broker's certificate (a
    /// DNS name or an IP literal). NULL: the host given to connect.
    pub server_name: *const c_char,
    /// ALPN protocols to offer, comma-separated in order of preference (e.g.
    /// "mqtt"), or NULL for none.
    pub alpn: *const c_char,
    /// Accept any broker certificate (the handshake signatures are still
    /// checked). Disables all protection against an active attacker: for
    /// tests only. The CA fields are then ignored.
    pub insecure_skip_verify: bool,
}

/// # Safety
/// As for `mqtt_client_set_tls`.
unsafe fn pem_source<'a>(
    file: *const c_char,
    pem: *const u8,
    pem_len: usize,
) -> crate::Result<Option<PemSource<'a>>> {
    match (file.is_null(), pem.is_null() && pem_len == 0) {
        (true, true) => Ok(None),
        (false, false) => Err(Error::InvalidArgument),
        // SAFETY: per mqtt_client_set_tls's contract.
        (false, true) => Ok(Some(PemSource::File(Path::new(unsafe { str_arg(file) }?)))),
        // SAFETY: per mqtt_client_set_tls's contract.
        (true, false) => Ok(Some(PemSource::Pem(unsafe {
            bytes_arg(pem.cast::<c_void>(), pem_len)
        }?))),
    }
}

/// Use TLS for every connection attempt from now on (the next `connect`,
/// `reconnect`, `connect_async` and automatic reconnection); `options` NULL
/// goes back to plain TCP. The options are read, and files loaded and parsed,
/// during this call: nothing in `options` needs to outlive it.
///
/// The TLS handshake runs inside the client's loop like the rest of the
/// connection (non-blocking, bounded by the connect timeout); CONNECT is sent
/// once it has succeeded. TLS 1.2 and 1.3 are offered (rustls, ring). The port
/// is the one given to connect (mosquitto's usual TLS port is 8883).
///
/// Returns MQTT_OK, or (the previous setting then stays in force):
/// - MQTT_ERR_INVALID_ARGUMENT: NULL client; both a file and PEM for the same
///   item; a PEM pointer NULL with a non-zero length; `server_name` not a
///   valid DNS name or IP literal; an empty or over-255-byte ALPN protocol.
/// - MQTT_ERR_INVALID_UTF8: a path, server name or ALPN string not UTF-8.
/// - MQTT_ERR_TLS_CA: the CA file cannot be read, or the CA holds no valid
///   certificate; without a CA, the system trust store is empty.
/// - MQTT_ERR_TLS_CERT: the certificate cannot be read or parsed, or a key
///   was given without a certificate.
/// - MQTT_ERR_TLS_KEY: the key cannot be read or parsed, does not match the
///   certificate, or a certificate was given without a key.
///
/// Handshake failures are reported by `mqtt_client_connect` (and, for
/// `mqtt_client_connect_async`, by the DISCONNECT callback):
/// MQTT_ERR_TLS_NOT_TRUSTED (the broker's certificate does not chain to the
/// CA, or is expired), MQTT_ERR_TLS_HOSTNAME (it is not valid for the server
/// name), MQTT_ERR_TLS_HANDSHAKE (any other failure, e.g. the broker refused
/// or required a client certificate, or the port does not speak TLS; with TLS
/// 1.3 a refused client certificate may instead show as
/// MQTT_ERR_CONNECTION_LOST when the broker closes before its alert is read).
///
/// Threading: thread-safe, also from callbacks (e.g. from the DISCONNECT
/// callback to load renewed certificates before the next automatic attempt).
/// Present only in libraries built with the `tls` cargo feature (the default).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_tls(
    client: *mut mqtt_client,
    options: *const mqtt_tls_options,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            if options.is_null() {
                return c.set_tls(None);
            }
            // SAFETY: non-NULL, and valid per this function's contract.
            let o = unsafe { &*options };
            // SAFETY: per this function's contract (each pair below).
            let ca = unsafe { pem_source(o.ca_file, o.ca_pem, o.ca_pem_len) }?;
            // SAFETY: as above.
            let cert = unsafe { pem_source(o.cert_file, o.cert_pem, o.cert_pem_len) }?;
            // SAFETY: as above.
            let key = unsafe { pem_source(o.key_file, o.key_pem, o.key_pem_len) }?;
            // SAFETY: as above.
            let server_name = unsafe { opt_str_arg(o.server_name) }?;
            let alpn: Vec<&str> = if o.alpn.is_null() {
                Vec::new()
            } else {
                // SAFETY: as above.
                unsafe { str_arg(o.alpn) }?
                    .split(',')
                    .map(str::trim)
                    .collect()
            };
            c.set_tls(Some(&TlsOptions {
                ca,
                cert,
                key,
                server_name,
                alpn: &alpn,
                insecure_skip_verify: o.insecure_skip_verify,
            }))
        });
        code(result)
    })
}
