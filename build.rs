//! Generates include/mqtt.h from src/ffi with cbindgen. The header is checked in;
//! it is rewritten only when its content changes, so CI can detect a stale copy
//! with `git diff --exit-code include/mqtt.h` after a build.

use std::path::PathBuf;

const PREAMBLE: &str = r#"/*
 * libmqtt: an MQTT 3.1.1 and 5.0 client library.
 *
 * Conventions
 * - Functions return int: >= 0 is success (a message id where the function
 *   makes one), < 0 is an mqtt_error code; mqtt_strerror() describes it.
 * - Bad arguments return an error and change nothing. No function aborts.
 * - Strings are NUL-terminated UTF-8. Every string and buffer passed in is
 *   copied before the call returns; the caller keeps ownership.
 * - Pointers handed to a callback are valid only during that callback.
 *
 * Threading
 * - Every function may be called from any thread.
 * - Callbacks run one at a time, in packet order, on the thread that runs the
 *   client: the loop thread (mqtt_client_loop_start) or, without one, the
 *   caller of mqtt_client_loop, mqtt_client_connect, mqtt_client_reconnect or
 *   mqtt_client_disconnect (which runs a turn to write the DISCONNECT and
 *   report it). Do not hold a lock your callbacks take across those calls.
 *   No library lock is held while a
 *   callback runs: a callback may publish, subscribe, unsubscribe, disconnect
 *   and even free its client. It may not call connect, reconnect, loop or
 *   loop_stop of its own client (MQTT_ERR_IN_CALLBACK).
 * - user_data pointers are passed back untouched on the client's thread.
 */"#;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let mut config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap();
    let [major, minor, patch] = ["MAJOR", "MINOR", "PATCH"]
        .map(|part| std::env::var(format!("CARGO_PKG_VERSION_{part}")).unwrap());
    // A versioned soname: programs linked with -lmqtt record NEEDED libmqtt.so.<major>
    // (0 for 0.x), so an incompatible major version is never loaded by mistake.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmqtt.so.{major}");
        link_soname_in_profile_dir(&format!("libmqtt.so.{major}"));
    }
    config.header = Some(PREAMBLE.to_string());
    config.after_includes = Some(format!(
        "\n#define MQTT_VERSION_MAJOR {major}\n#define MQTT_VERSION_MINOR {minor}\n\
         #define MQTT_VERSION_PATCH {patch}\n#define MQTT_VERSION_STRING \"{version}\"\n"
    ));
    if std::env::var_os("CARGO_FEATURE_TLS").is_none() {
        // The checked-in header is the default build's, TLS functions included:
        // a build without the `tls` feature leaves it alone (those functions are
        // then missing from the library, so using them fails at link time).
        return;
    }
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .with_src(crate_dir.join("src/ffi/types.rs"))
        .generate();
    match bindings {
        Ok(bindings) => {
            bindings.write_to_file(crate_dir.join("include/mqtt.h"));
        }
        Err(e) => println!("cargo:warning=mqtt.h not regenerated: {e}"),
    }
}

/// Cargo writes only `libmqtt.so`, but a program linked against it loads the soname:
/// lay out `libmqtt.so.<major> -> libmqtt.so` beside it, so that `cargo build` followed
/// by `cc ... -L target/release -lmqtt -Wl,-rpath,...` gives a program that starts.
/// The link is made before rustc writes the library (a build script runs first) and
/// resolves once it exists. OUT_DIR is `<profile dir>/build/mqtt-<hash>/out`.
#[cfg(unix)]
fn link_soname_in_profile_dir(soname: &str) {
    let Some(out_dir) = std::env::var_os("OUT_DIR") else {
        return;
    };
    let Some(profile_dir) = PathBuf::from(out_dir).ancestors().nth(3).map(PathBuf::from) else {
        return;
    };
    let link = profile_dir.join(soname);
    if std::fs::read_link(&link).is_ok_and(|target| target.as_os_str() == "libmqtt.so") {
        return;
    }
    let _ = std::fs::remove_file(&link);
    if let Err(e) = std::os::unix::fs::symlink("libmqtt.so", &link) {
        println!("cargo:warning=cannot create {}: {e}", link.display());
    }
}

#[cfg(not(unix))]
fn link_soname_in_profile_dir(_soname: &str) {}
