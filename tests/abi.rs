//! The shared library exports exactly the functions that mqtt.h declares.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn header_functions() -> BTreeSet<String> {
    let header = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/mqtt.h"))
        .expect("include/mqtt.h");
    header
        .lines()
        .filter(|line| !line.starts_with(' ') && !line.starts_with("typedef"))
        .filter_map(|line| {
            let name_end = line.find('(')?;
            let name = line[..name_end].rsplit([' ', '*']).next()?;
            name.starts_with("mqtt_").then(|| name.to_owned())
        })
        .collect()
}

fn library() -> PathBuf {
    common::library::lib_dir().join("libmqtt.so")
}

#[test]
fn exported_symbols_are_exactly_the_header_functions() {
    let lib = library();
    assert!(lib.exists(), "{} missing", lib.display());
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .expect("nm (binutils) runs");
    assert!(out.status.success());
    let exported: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2).map(str::to_owned))
        .collect();
    let mut declared = header_functions();
    if cfg!(not(feature = "tls")) {
        // The checked-in header is the default build's; without the `tls`
        // feature the library lacks its functions.
        declared.remove("mqtt_client_set_tls");
    }
    assert!(declared.len() >= 25, "parsed only {declared:?}");
    assert_eq!(exported, declared, "exports differ from mqtt.h");
}

#[test]
fn shared_library_has_the_versioned_soname() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let lib = library();
    let out = Command::new("readelf")
        .arg("-d")
        .arg(&lib)
        .output()
        .expect("readelf (binutils) runs");
    assert!(out.status.success());
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    let soname = dynamic
        .lines()
        .find(|l| l.contains("(SONAME)"))
        .unwrap_or_else(|| panic!("{} has no SONAME:\n{dynamic}", lib.display()));
    assert!(
        soname.contains(&format!("[libmqtt.so.{major}]")),
        "unexpected {soname}"
    );
}

/// Every exported function turns a panic into MQTT_ERR_INTERNAL (catch_unwind; see
/// `panic_boundary_turns_a_panic_into_mqtt_err_internal` in src/ffi/mod.rs), which
/// only works when the library is built with unwinding. `cargo test` always builds
/// with unwinding, so that test cannot see a profile that ships `panic = "abort"`:
/// this one reads the profiles instead.
#[test]
fn profiles_keep_panic_unwind() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("Cargo.toml");
    let mut section = String::new();
    let mut release_unwinds = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() != "panic" || !section.starts_with("[profile.") {
            continue;
        }
        assert_eq!(
            value.trim(),
            "\"unwind\"",
            "{section} sets panic = {}: the C boundary needs unwinding",
            value.trim()
        );
        release_unwinds |= section == "[profile.release]";
    }
    assert!(
        release_unwinds,
        "[profile.release] should say panic = \"unwind\" explicitly"
    );
}
