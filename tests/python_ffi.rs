//! Python through ctypes: `c_examples/python_example.py` runs against the cdylib cargo
//! just built and a private mosquitto (QoS 0/1/2, a condition + priority callback,
//! logging; then MQTT 5: a subscription identifier, SUBACK reason codes, a publish_v5
//! with user properties and a content type read back in the message callback), and its
//! ctypes structs must have the layout the C compiler gives mqtt.h (the MQTT 5 fields
//! appended to mqtt_message and mqtt_data included).
//!
//! Skipped (with a note) when `python3` is missing; `MQTT_SKIP_PYTHON=1` skips it too.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::Broker;

const TIMEOUT: Duration = Duration::from_secs(60);

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn example() -> PathBuf {
    manifest_dir().join("c_examples/python_example.py")
}

/// An up-to-date libmqtt.so (`cargo test` alone builds only the rlib: see
/// `common::library::lib_dir`).
fn library() -> PathBuf {
    let lib = common::library::lib_dir().join("libmqtt.so");
    assert!(lib.exists(), "{} missing", lib.display());
    lib
}

fn python_available() -> bool {
    if std::env::var_os("MQTT_SKIP_PYTHON").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("MQTT_SKIP_PYTHON set: skipped");
        return false;
    }
    let ok = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("python3 not found: skipped");
    }
    ok
}

/// Run `cmd` to completion or `TIMEOUT` (then kill it and fail).
fn run(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} timed out\n--- stdout ---\n{}--- stderr ---\n{}",
                String::from_utf8_lossy(&out.join().unwrap()),
                String::from_utf8_lossy(&err.join().unwrap())
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn python_example_against_mosquitto() {
    if !python_available() {
        return;
    }
    let broker = Broker::start();
    let mut cmd = Command::new("python3");
    cmd.arg(example())
        .arg(broker.host())
        .arg(broker.port().to_string())
        .env("MQTT_LIBRARY", library());
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{}\n--- broker log ---\n{}",
        text(&out),
        broker.log()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("FAIL"), "{stdout}");
    for expected in [
        "ok   QoS 0 message received",
        "ok   QoS 1 message received",
        "ok   QoS 2 message received",
        "ok   alert went to the priority-10 condition callback",
        "ok   the priority-5 callback did not run",
        "ok   3.1.1 messages carry no properties",
        "ok   v5 SUBACK reason codes: [[1]]",
        "ok   v5 message received",
        "ok   v5 user properties read back in order: [('sensor', 'kitchen'), ('unit', 'C')]",
        "ok   v5 content type: text/plain",
        "ok   v5 subscription identifier: [7]",
        "ok   v5 PUBACK reason code: [0]",
        "all good",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing:\n{stdout}");
    }
}

/// The C side of `python_example.py --layout`.
const LAYOUT_C: &str = r#"#include <mqtt.h>
#include <stddef.h>
#include <stdio.h>
#define F(s, f) printf(" %s:%zu", #f, offsetof(struct s, f))
int main(void) {
    printf("mqtt_message %zu", sizeof(struct mqtt_message));
    F(mqtt_message, topic); F(mqtt_message, payload); F(mqtt_message, payload_len);
    F(mqtt_message, qos); F(mqtt_message, retain); F(mqtt_message, dup); F(mqtt_message, mid);
    F(mqtt_message, properties);
    printf("\nmqtt_data %zu", sizeof(struct mqtt_data));
    F(mqtt_data, command); F(mqtt_data, message); F(mqtt_data, mid);
    F(mqtt_data, return_code); F(mqtt_data, session_present); F(mqtt_data, granted_qos);
    F(mqtt_data, granted_qos_len); F(mqtt_data, error); F(mqtt_data, reason_code);
    F(mqtt_data, reason_codes); F(mqtt_data, reason_codes_len); F(mqtt_data, properties);
    F(mqtt_data, server_index);
    printf("\nmqtt_subscription %zu", sizeof(struct mqtt_subscription));
    F(mqtt_subscription, topic); F(mqtt_subscription, qos);
    printf("\nmqtt_subscription_v5 %zu", sizeof(struct mqtt_subscription_v5));
    F(mqtt_subscription_v5, topic); F(mqtt_subscription_v5, qos);
    F(mqtt_subscription_v5, no_local); F(mqtt_subscription_v5, retain_as_published);
    F(mqtt_subscription_v5, retain_handling);
    printf("\n");
    return 0;
}
"#;

#[test]
fn python_structs_match_the_c_layout() {
    if !python_available() {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python_ffi");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&src, LAYOUT_C).unwrap();
    let cc = std::env::var("CC")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cc".into());
    let mut build = Command::new(cc);
    build
        .args(["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-I"])
        .arg(manifest_dir().join("include"))
        .arg("-o")
        .arg(&exe)
        .arg(&src);
    let built = run(build);
    assert!(built.status.success(), "layout.c: {}", text(&built));
    let c = run(Command::new(&exe));
    assert!(c.status.success(), "{}", text(&c));

    let mut py = Command::new("python3");
    py.arg(example()).arg("--layout");
    let python = run(py);
    assert!(python.status.success(), "{}", text(&python));
    assert_eq!(
        String::from_utf8_lossy(&python.stdout),
        String::from_utf8_lossy(&c.stdout),
        "python_example.py's ctypes structs differ from mqtt.h"
    );
}
