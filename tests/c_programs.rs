//! The C side, for real: every C file of `tests/c/` and `c_examples/` is compiled with the
//! system C compiler (`$CC`, default `cc`) as strict C99 against `include/mqtt.h` and the
//! cdylib that cargo just built, then run against a private mosquitto; the header is also
//! compiled as C99 and as C++11, and a C++ program is linked against the library. When
//! valgrind is installed every program runs again under it and must report no error and
//! no definite/indirect leak. Every program is also compiled with
//! `-fsanitize=address,undefined` and run again: it must exit 0 with no AddressSanitizer,
//! LeakSanitizer or UndefinedBehaviorSanitizer report (the Rust library itself is not
//! instrumented). Every program run is bounded by a timeout.
//!
//! `c_examples/*.cpp` (C++17, `$CXX -std=c++17 ... -Werror`) are run the same three ways.
//! Programs record `NEEDED libmqtt.so.0` (the library's soname) and load it through
//! the `libmqtt.so.0 -> libmqtt.so` symlink that build.rs lays out next to cargo's
//! output, as a user's program linked against `target/release` does. One program is also
//! linked statically against `libmqtt.a` with exactly the system libraries CMakeLists.txt
//! lists (checked against rustc's `--print native-static-libs`) and run.
//!
//! `cmake_consumer` runs `tests/cmake_consumer/run.sh`: libmqtt consumed through CMake
//! (add_subdirectory and an installed package) and pkg-config, shared and static.
//!
//! Environment: `CC` / `CXX` pick the compilers; `MQTT_SKIP_VALGRIND=1` skips valgrind;
//! `MQTT_SKIP_SANITIZERS=1` skips the sanitizer runs (also skipped, with a note, when the
//! compiler cannot link the sanitizer runtimes);
//! `MQTT_SKIP_CMAKE_CONSUMER=1` skips the (slower: two release builds) consumer test.

mod common;
mod netpaths_support;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::Broker;
use common::library::{SONAME, lib_dir};

/// Programs run natively.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// Programs run under valgrind (10-50x slower).
const VALGRIND_TIMEOUT: Duration = Duration::from_secs(180);
/// Programs built with ASan + UBSan (about 2x slower).
const SANITIZER_TIMEOUT: Duration = Duration::from_secs(60);

/// How a program is built and run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Native,
    Valgrind,
    /// Built with `SANITIZER_FLAGS`, run with `SANITIZER_ENV`.
    Sanitizers,
}

impl Mode {
    fn timeout(self) -> Duration {
        match self {
            Mode::Native => RUN_TIMEOUT,
            Mode::Valgrind => VALGRIND_TIMEOUT,
            Mode::Sanitizers => SANITIZER_TIMEOUT,
        }
    }

    fn describe(self, name: &str) -> String {
        match self {
            Mode::Native => name.to_string(),
            Mode::Valgrind => format!("{name} under valgrind"),
            Mode::Sanitizers => format!("{name} with ASan+UBSan"),
        }
    }
}

const SANITIZER_FLAGS: &[&str] = &[
    "-fsanitize=address,undefined",
    "-fno-omit-frame-pointer",
    "-g",
];

/// No LeakSanitizer suppressions are needed: the Rust runtime reported no false positive.
const SANITIZER_ENV: &[(&str, &str)] = &[
    ("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1"),
    ("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"),
];

/// What a sanitizer prints when it finds something.
const SANITIZER_MARKERS: &[&str] = &[
    "AddressSanitizer",
    "LeakSanitizer",
    "UndefinedBehaviorSanitizer",
    "runtime error:",
];

/// How a C program is run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// `program HOST PORT` against one private broker.
    HostPort,
    /// `program HOST1 PORT1 HOST2 PORT2` against two private brokers.
    TwoBrokers,
    /// `program HOST PORT` against one private broker, with a tinyproxy requiring
    /// Basic credentials: `MQTT_TEST_PROXY` (its URI with the right ones) and
    /// `MQTT_TEST_PROXY_BAD` (with a wrong password) in the environment.
    HostPortProxy,
    /// home_controller + home_sensor, run together by `run_home_heating`.
    HomePair,
    /// mqtt_load in each of its modes, run by `run_load_tool`.
    Load,
}

/// Every C program of `tests/c/` and `c_examples/`; `every_c_file_is_covered` fails when a
/// file is missing here, so that no program goes untested.
const PROGRAMS: &[(&str, Kind)] = &[
    // tests/c
    ("api_errors", Kind::HostPort),
    ("callbacks", Kind::HostPort),
    ("concurrency", Kind::HostPort),
    ("external_loop", Kind::HostPort),
    ("failover", Kind::HostPort),
    ("logging", Kind::HostPort),
    ("net_paths", Kind::HostPortProxy),
    ("promises", Kind::HostPort),
    ("reactor", Kind::HostPort),
    ("store_torn", Kind::HostPort),
    ("v5_api", Kind::HostPort),
    // c_examples
    ("home_controller", Kind::HomePair),
    ("home_sensor", Kind::HomePair),
    ("home_v5", Kind::HostPort),
    ("mqtt_load", Kind::Load),
    ("mid_callback", Kind::HostPort),
    ("own_loop", Kind::HostPort),
    ("relay_poll", Kind::TwoBrokers),
    ("request_response", Kind::HostPort),
    ("seed_example", Kind::HostPort),
    ("sqlite_store", Kind::HostPort),
    // c_examples, C++17
    ("cpp_example", Kind::HostPort),
];

const C_FLAGS: &[&str] = &["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"];
/// For the `.cpp` programs (built with `$CXX`, default `c++`).
const CXX_FLAGS: &[&str] = &["-std=c++17", "-Wall", "-Wextra", "-pedantic", "-Werror"];

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn include_dir() -> PathBuf {
    manifest_dir().join("include")
}

/// Where compiled programs go (cargo's scratch dir for integration tests).
fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c_programs");
    std::fs::create_dir_all(&dir).expect("create the C output dir");
    dir
}

fn c_compiler() -> String {
    std::env::var("CC")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cc".into())
}

fn cxx_compiler() -> String {
    std::env::var("CXX")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "c++".into())
}

/// Run a compiler command; panic with its output on failure.
fn compile(mut cmd: Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run the compiler for {what}: {e} ({cmd:?})"));
    assert!(
        out.status.success(),
        "{what} does not compile cleanly:\n{cmd:?}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The path of a C program (`tests/c/<name>.c` or `c_examples/<name>.c`), or of a C++
/// one (`c_examples/<name>.cpp`).
fn source_of(name: &str) -> PathBuf {
    let test = manifest_dir().join("tests/c").join(format!("{name}.c"));
    let cxx = manifest_dir()
        .join("c_examples")
        .join(format!("{name}.cpp"));
    if test.exists() {
        test
    } else if cxx.exists() {
        cxx
    } else {
        manifest_dir().join("c_examples").join(format!("{name}.c"))
    }
}

/// Compile (once per test binary run) the C program `name` and return the executable.
fn program(name: &str) -> PathBuf {
    program_for(name, Mode::Native)
}

/// `program`, built with the sanitizers for `Mode::Sanitizers` (as `<name>-san`).
fn program_for(name: &str, mode: Mode) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    let sanitize = mode == Mode::Sanitizers;
    let key = if sanitize {
        format!("{name}-san")
    } else {
        name.to_string()
    };
    if let Some(exe) = built.get(&key) {
        return exe.clone();
    }
    let src = source_of(name);
    assert!(src.exists(), "no C source for {name}");
    let lib = lib_dir();
    let exe = out_dir().join(&key);
    let is_cxx = src.extension().is_some_and(|e| e == "cpp");
    let mut cmd = Command::new(if is_cxx { cxx_compiler() } else { c_compiler() });
    cmd.args(if is_cxx { CXX_FLAGS } else { C_FLAGS })
        .arg("-g")
        // -O2 as a release build would: some warnings (maybe-uninitialized,
        // format-truncation) only appear with the optimiser's analysis.
        .args(if sanitize { SANITIZER_FLAGS } else { &["-O2"] })
        .arg("-pthread")
        .arg("-I")
        .arg(include_dir())
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .arg("-L")
        .arg(lib)
        .arg("-lmqtt")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(extra_libs(name));
    compile(cmd, &src.display().to_string());
    built.insert(key, exe.clone());
    exe
}

/// Libraries a program needs beyond libmqtt (their Debian packages are in
/// `scripts/test.sh`'s list).
fn extra_libs(name: &str) -> &'static [&'static str] {
    match name {
        "sqlite_store" => &["-lsqlite3"],
        _ => &[],
    }
}

/// What a finished (or killed) program left behind.
struct Run {
    status: Option<ExitStatus>,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    fn describe(&self, what: &str) -> String {
        format!(
            "{what}: {}\n--- stdout ---\n{}--- stderr ---\n{}",
            if self.timed_out {
                "TIMED OUT (killed)".to_string()
            } else {
                format!("{:?}", self.status)
            },
            self.stdout,
            self.stderr
        )
    }
}

fn collect(pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let mut pipe = pipe;
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Wait for `child` at most `timeout`; kill it after that.
fn wait_bounded(child: &mut Child, timeout: Duration) -> (Option<ExitStatus>, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (Some(status), false),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return (None, true);
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for a child: {e}"),
        }
    }
}

/// Run a command to completion (or its timeout), capturing stdout and stderr.
fn run_bounded(mut cmd: Command, timeout: Duration) -> Run {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let (status, timed_out) = wait_bounded(&mut child, timeout);
    Run {
        status,
        timed_out,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn valgrind_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var_os("MQTT_SKIP_VALGRIND").is_some_and(|v| !v.is_empty() && v != "0") {
            return false;
        }
        Command::new("valgrind")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Whether the sanitizer runs are wanted and the compiler can build and run a trivial
/// program with `SANITIZER_FLAGS` (probed once; prints why not).
fn sanitizers_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var_os("MQTT_SKIP_SANITIZERS").is_some_and(|v| !v.is_empty() && v != "0") {
            eprintln!("MQTT_SKIP_SANITIZERS set: sanitizer runs skipped");
            return false;
        }
        let src = out_dir().join("sanitizer_probe.c");
        let exe = out_dir().join("sanitizer_probe");
        std::fs::write(&src, "int main(void) { return 0; }\n").expect("write the probe");
        let built = Command::new(c_compiler())
            .args(SANITIZER_FLAGS)
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .stdin(Stdio::null())
            .output();
        match built {
            Ok(out) if out.status.success() => {
                let mut run = Command::new(&exe);
                run.envs(SANITIZER_ENV.iter().copied());
                let run = run_bounded(run, RUN_TIMEOUT);
                if !run.success() {
                    eprintln!(
                        "note: a sanitized program does not run here: skipped\n{}",
                        run.describe("sanitizer probe")
                    );
                }
                run.success()
            }
            Ok(out) => {
                eprintln!(
                    "note: {} cannot link the ASan/UBSan runtimes: sanitizer runs skipped\n{}",
                    c_compiler(),
                    String::from_utf8_lossy(&out.stderr)
                );
                false
            }
            Err(e) => {
                eprintln!(
                    "note: cannot run {}: {e}: sanitizer runs skipped",
                    c_compiler()
                );
                false
            }
        }
    })
}

/// The command that runs `exe` natively, under valgrind or with the sanitizers' options.
fn command_for(exe: &Path, mode: Mode) -> Command {
    match mode {
        Mode::Valgrind => {
            let mut cmd = Command::new("valgrind");
            cmd.args([
                "-q",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite,indirect",
                "--error-exitcode=99",
            ])
            .arg(exe);
            cmd
        }
        Mode::Sanitizers => {
            let mut cmd = Command::new(exe);
            cmd.envs(SANITIZER_ENV.iter().copied());
            cmd
        }
        Mode::Native => Command::new(exe),
    }
}

/// Panic when a sanitizer reported something in `stderr` (even with exit status 0).
fn assert_no_sanitizer_report(mode: Mode, stderr: &str, what: &str) {
    if mode != Mode::Sanitizers {
        return;
    }
    let found: Vec<&str> = SANITIZER_MARKERS
        .iter()
        .copied()
        .filter(|m| stderr.contains(m))
        .collect();
    assert!(
        found.is_empty(),
        "{what}: sanitizer report ({}):\n{stderr}",
        found.join(", ")
    );
}

/// Run a program of `PROGRAMS` against fresh private broker(s); panic with everything on
/// failure.
fn run_program(name: &str, mode: Mode) {
    let kind = PROGRAMS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
        .unwrap_or_else(|| panic!("{name} is not in PROGRAMS"));
    if kind == Kind::HomePair {
        return run_home_heating(mode);
    }
    if kind == Kind::Load {
        return run_load_tool(mode);
    }
    let exe = program_for(name, mode);
    let brokers: Vec<Broker> = match kind {
        Kind::TwoBrokers => vec![Broker::start(), Broker::start()],
        _ => vec![Broker::start()],
    };
    let mut cmd = command_for(&exe, mode);
    for broker in &brokers {
        cmd.arg(broker.host()).arg(broker.port().to_string());
    }
    let _proxy = (kind == Kind::HostPortProxy).then(|| {
        let creds = ("cuser", "cpass");
        let proxy = netpaths_support::RealProxy::tinyproxy(Some(creds));
        cmd.env("MQTT_TEST_PROXY", proxy.uri("http", Some(creds)));
        cmd.env(
            "MQTT_TEST_PROXY_BAD",
            proxy.uri("http", Some(("cuser", "wrong"))),
        );
        proxy
    });
    let run = run_bounded(cmd, mode.timeout());
    let what = mode.describe(name);
    let logs: String = brokers
        .iter()
        .map(|b| format!("--- broker log (port {}) ---\n{}", b.port(), b.log()))
        .collect();
    assert!(run.success(), "{}\n{logs}", run.describe(&what));
    assert_no_sanitizer_report(mode, &run.stderr, &what);
    print!("{}", run.stdout);
}

/// A program started in the background whose stdout lines can be awaited.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: thread::JoinHandle<String>,
    stderr: thread::JoinHandle<String>,
}

impl Background {
    fn start(mut cmd: Command, what: &str) -> Background {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let stderr = collect(child.stderr.take().unwrap());
        let (tx, lines) = mpsc::channel::<String>();
        let out = child.stdout.take().unwrap();
        let stdout = thread::spawn(move || {
            let mut all = Vec::new();
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line.clone());
                all.push(line);
            }
            all.join("\n") + "\n"
        });
        Background {
            child,
            lines,
            stdout,
            stderr,
        }
    }

    /// Wait (at most `timeout`, no fixed sleep) for a line that satisfies `ready`;
    /// if none comes, kill the program and panic with its output and `context`.
    fn await_line(
        mut self,
        timeout: Duration,
        ready: impl Fn(&str) -> bool,
        what: &str,
        context: &str,
    ) -> Self {
        let deadline = Instant::now() + timeout;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if ready(&line) {
                return self;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "{what}\n--- stdout ---\n{}--- stderr ---\n{}\n{context}",
            self.stdout.join().unwrap_or_default(),
            self.stderr.join().unwrap_or_default(),
        );
    }

    /// Wait for the program to end (killed after `timeout`).
    fn finish(mut self, timeout: Duration) -> Run {
        let (status, timed_out) = wait_bounded(&mut self.child, timeout);
        Run {
            status,
            timed_out,
            stdout: self.stdout.join().unwrap_or_default(),
            stderr: self.stderr.join().unwrap_or_default(),
        }
    }
}

/// The home-heating pair: the controller (until home/_stop), once it printed its
/// "ready" line, then the sensor; both must exit 0 and the controller must have decided.
fn run_home_heating(mode: Mode) {
    let controller = program_for("home_controller", mode);
    let sensor = program_for("home_sensor", mode);
    let broker = Broker::start();
    let port = broker.port().to_string();
    let timeout = mode.timeout();

    let mut cmd = command_for(&controller, mode);
    cmd.arg(broker.host()).arg(&port);
    let controller_bg = Background::start(cmd, "home_controller").await_line(
        timeout,
        |line| line.starts_with("controller: ready"),
        "home_controller never became ready",
        &format!("--- broker log ---\n{}", broker.log()),
    );

    let mut cmd = command_for(&sensor, mode);
    cmd.arg(broker.host()).arg(&port).arg("3");
    let sensor_run = run_bounded(cmd, timeout);
    let controller_run = controller_bg.finish(timeout);
    assert!(
        sensor_run.success() && controller_run.success(),
        "{}\n{}\n--- broker log ---\n{}",
        sensor_run.describe(&mode.describe("home_sensor")),
        controller_run.describe(&mode.describe("home_controller")),
        broker.log()
    );
    assert_no_sanitizer_report(mode, &sensor_run.stderr, "home_sensor");
    assert_no_sanitizer_report(mode, &controller_run.stderr, "home_controller");
    let out = &controller_run.stdout;
    for expected in [
        "controller: kitchen 17.5C -> heating ON",
        "controller: kitchen 19.5C -> heating OFF",
        "controller: garage 3.0C -> heating ON at full power",
        "controller: attic 15.0C -> no rule for this room",
        "controller: home/_stop received",
        "controller: done after 18 readings",
    ] {
        assert!(
            out.contains(expected),
            "controller output lacks {expected:?}:\n{out}"
        );
    }
    // 6 rooms x 3 rounds: one decision each, the frost rule beat the garage's own rule
    assert_eq!(
        out.matches(" -> ").count(),
        18,
        "one decision per reading:\n{out}"
    );
    assert!(!out.contains("garage 3.0C -> heating ON (utility"), "{out}");
    print!("{}{}", sensor_run.stdout, out);
}

/// The value after `key` in mqtt_load's summary line (`... key VALUE ...`).
fn summary_field(out: &str, key: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.starts_with("summary:"))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == key {
            return words.next()?.trim_start_matches('(').parse().ok();
        }
    }
    None
}

/// mqtt_load (c_examples/mqtt_load.c), as its README section tells users to run it:
/// `conn` holds N connections; `sub` with one topic per client, then `pub` with the same
/// topics: every message arrives at exactly its subscriber (the counts match, no error),
/// and the summaries carry the connect rate and the latency.
fn run_load_tool(mode: Mode) {
    // a few hundred natively; valgrind and the sanitizers are 10-50x slower
    let clients: u32 = if mode == Mode::Native { 300 } else { 20 };
    let per_client: u32 = 3;
    let exe = program_for("mqtt_load", mode);
    let broker = Broker::builder()
        .extra_config("max_connections -1\n")
        .start();
    let port = broker.port().to_string();
    let timeout = mode.timeout();
    let n = clients.to_string();
    let logs = |runs: &[(&str, &Run)]| -> String {
        let mut s: String = runs.iter().map(|(w, r)| r.describe(w) + "\n").collect();
        s += &format!("--- broker log ---\n{}", broker.log());
        s
    };

    // conn: all connect and stay connected for the run
    let mut cmd = command_for(&exe, mode);
    cmd.args([
        "conn",
        "-h",
        broker.host(),
        "-p",
        &port,
        "-c",
        &n,
        "-d",
        "2",
    ]);
    let conn = run_bounded(cmd, timeout);
    assert!(conn.success(), "{}", logs(&[("mqtt_load conn", &conn)]));
    assert_no_sanitizer_report(mode, &conn.stderr, "mqtt_load conn");
    assert_eq!(
        summary_field(&conn.stdout, "connected"),
        Some(f64::from(clients)),
        "{}",
        conn.stdout
    );

    // sub first; pub once every subscriber has its SUBACK (read from its status lines)
    let total = (clients * per_client).to_string();
    let mut cmd = command_for(&exe, mode);
    cmd.args(["sub", "-h", broker.host(), "-p", &port, "-c", &n, "-q", "1"])
        .args(["-t", "load/%i/x", "-n", &total, "-d", "60"]);
    let ready = format!("subscribed {clients}/{clients}");
    let sub = Background::start(cmd, "mqtt_load sub").await_line(
        timeout,
        |line| line.contains(&ready),
        "mqtt_load sub never had all SUBACKs",
        &format!("--- broker log ---\n{}", broker.log()),
    );
    let mut cmd = command_for(&exe, mode);
    cmd.args([
        "pub",
        "-h",
        broker.host(),
        "-p",
        &port,
        "-c",
        &n,
        "-q",
        "1",
        "-t",
        "load/%i/x",
    ])
    .args(["-I", "50", "-n", &per_client.to_string(), "-s", "100"]);
    let publisher = run_bounded(cmd, timeout);
    let subscriber = sub.finish(timeout);
    let both = || {
        logs(&[
            ("mqtt_load pub", &publisher),
            ("mqtt_load sub", &subscriber),
        ])
    };
    assert!(publisher.success() && subscriber.success(), "{}", both());
    assert_no_sanitizer_report(mode, &publisher.stderr, "mqtt_load pub");
    assert_no_sanitizer_report(mode, &subscriber.stderr, "mqtt_load sub");
    let expected = f64::from(clients * per_client);
    assert_eq!(
        summary_field(&publisher.stdout, "sent"),
        Some(expected),
        "{}",
        both()
    );
    assert_eq!(
        summary_field(&publisher.stdout, "acked"),
        Some(expected),
        "{}",
        both()
    );
    assert_eq!(
        summary_field(&subscriber.stdout, "received"),
        Some(expected),
        "{}",
        both()
    );
    assert_eq!(
        summary_field(&subscriber.stdout, "errors"),
        Some(0.0),
        "{}",
        both()
    );
    // latency from the send time in each payload: present and plausible (under a minute)
    let p99 = summary_field(&subscriber.stdout, "p99").expect("a latency p99");
    assert!(p99 > 0.0 && p99 < 60e6, "{}", both());
    print!("{}{}{}", conn.stdout, publisher.stdout, subscriber.stdout);
}

// ---- the header ------------------------------------------------------------------------

#[test]
fn header_compiles_as_c99() {
    let src = out_dir().join("header_c99.c");
    std::fs::write(
        &src,
        "#include <mqtt.h>\n#include <mqtt.h>\nint main(void) { return 0; }\n",
    )
    .unwrap();
    let mut cmd = Command::new(c_compiler());
    cmd.args(C_FLAGS)
        .arg("-fsyntax-only")
        .arg("-I")
        .arg(include_dir())
        .arg(&src);
    compile(cmd, "include/mqtt.h as C99");
}

/// bench/size_hello.c (bench/size.sh's program) compiles cleanly in its four variants,
/// so that the size script does not rot between runs.
#[test]
fn bench_size_hello_compiles() {
    let src = manifest_dir().join("bench/size_hello.c");
    for defines in [
        &[][..],
        &["-DSIZE_HELLO_TLS"][..],
        &["-DSIZE_HELLO_BASELINE"][..],
        &["-DSIZE_HELLO_BASELINE", "-DSIZE_HELLO_TLS"][..],
    ] {
        let mut cmd = Command::new(c_compiler());
        cmd.args(C_FLAGS)
            .args(defines)
            .arg("-fsyntax-only")
            .arg("-I")
            .arg(include_dir())
            .arg(&src);
        compile(cmd, &format!("bench/size_hello.c {defines:?}"));
    }
}

#[test]
fn header_compiles_as_cxx11_and_links() {
    let src = out_dir().join("header_cxx.cpp");
    std::fs::write(
        &src,
        r#"#include <mqtt.h>
#include <cstring>
#include <cstdio>
// C++ sees the same C ABI: extern "C" linkage, the enums usable as ints.
static void on_publish(mqtt_client *, const mqtt_data *data, void *) {
    std::printf("%d\n", static_cast<int>(data->command));
}
int main() {
    mqtt_client *c = mqtt_client_new("cxx", true);
    if (c == nullptr) return 1;
    int rc = mqtt_client_on(c, MQTT_PUBLISH, on_publish, nullptr, 0, nullptr);
    mqtt_client_free(c);
    if (rc != MQTT_OK) return 2;
    if (std::strcmp(mqtt_version(), MQTT_VERSION_STRING) != 0) return 3;
    if (!mqtt_topic_matches("a/+", "a/b")) return 4;
    return mqtt_strerror(MQTT_ERR_INVALID_ARGUMENT) != nullptr ? 0 : 5;
}
"#,
    )
    .unwrap();
    let mut syntax = Command::new(cxx_compiler());
    syntax
        .args([
            "-x",
            "c++",
            "-std=c++11",
            "-Wall",
            "-Wextra",
            "-pedantic",
            "-Werror",
        ])
        .arg("-fsyntax-only")
        .arg("-I")
        .arg(include_dir())
        .arg(manifest_dir().join("include/mqtt.h"));
    compile(syntax, "include/mqtt.h as C++11");

    let lib = lib_dir();
    let exe = out_dir().join("header_cxx");
    let mut link = Command::new(cxx_compiler());
    link.args([
        "-std=c++11",
        "-Wall",
        "-Wextra",
        "-pedantic",
        "-Werror",
        "-pthread",
    ])
    .arg("-I")
    .arg(include_dir())
    .arg("-o")
    .arg(&exe)
    .arg(&src)
    .arg("-L")
    .arg(lib)
    .arg("-lmqtt")
    .arg(format!("-Wl,-rpath,{}", lib.display()));
    compile(link, "a C++11 program using mqtt.h");
    let run = run_bounded(Command::new(&exe), RUN_TIMEOUT);
    assert!(run.success(), "{}", run.describe("the C++ program"));
}

#[test]
fn every_c_file_is_covered() {
    let mut found = BTreeSet::new();
    for dir in ["tests/c", "c_examples"] {
        for entry in std::fs::read_dir(manifest_dir().join(dir))
            .unwrap()
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "c" || e == "cpp") {
                found.insert(path.file_stem().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let known: BTreeSet<String> = PROGRAMS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        found, known,
        "add new C programs to PROGRAMS (and a #[test] below) so that they are run"
    );
    // and every one of them compiles cleanly
    for name in &known {
        program(name);
    }
}

// ---- one test per program: natively, under valgrind, with ASan + UBSan ------------------

macro_rules! program_tests {
    ($($name:literal => $native:ident, $under_valgrind:ident, $sanitized:ident;)*) => {
        $(
            #[test]
            fn $native() {
                run_program($name, Mode::Native);
            }

            #[test]
            fn $under_valgrind() {
                if !valgrind_available() {
                    eprintln!("valgrind not found (or MQTT_SKIP_VALGRIND set): skipped");
                    return;
                }
                run_program($name, Mode::Valgrind);
            }

            #[test]
            fn $sanitized() {
                if !sanitizers_available() {
                    eprintln!("sanitizers unavailable (or MQTT_SKIP_SANITIZERS set): skipped");
                    return;
                }
                run_program($name, Mode::Sanitizers);
            }
        )*
    };
}

program_tests! {
    "api_errors" => c_api_errors, valgrind_c_api_errors, asan_c_api_errors;
    "callbacks" => c_callbacks, valgrind_c_callbacks, asan_c_callbacks;
    "concurrency" => c_concurrency, valgrind_c_concurrency, asan_c_concurrency;
    "external_loop" => c_external_loop, valgrind_c_external_loop, asan_c_external_loop;
    "failover" => c_failover, valgrind_c_failover, asan_c_failover;
    "logging" => c_logging, valgrind_c_logging, asan_c_logging;
    "net_paths" => c_net_paths, valgrind_c_net_paths, asan_c_net_paths;
    "promises" => c_promises, valgrind_c_promises, asan_c_promises;
    "reactor" => c_reactor, valgrind_c_reactor, asan_c_reactor;
    "store_torn" => c_store_torn, valgrind_c_store_torn, asan_c_store_torn;
    "v5_api" => c_v5_api, valgrind_c_v5_api, asan_c_v5_api;
    "home_controller" => example_home_heating, valgrind_example_home_heating,
        asan_example_home_heating;
    "mid_callback" => example_mid_callback, valgrind_example_mid_callback,
        asan_example_mid_callback;
    "own_loop" => example_own_loop, valgrind_example_own_loop, asan_example_own_loop;
    "relay_poll" => example_relay_poll, valgrind_example_relay_poll, asan_example_relay_poll;
    "request_response" => example_request_response, valgrind_example_request_response,
        asan_example_request_response;
    "home_v5" => example_home_v5, valgrind_example_home_v5, asan_example_home_v5;
    "mqtt_load" => example_mqtt_load, valgrind_example_mqtt_load, asan_example_mqtt_load;
    "seed_example" => example_seed_example, valgrind_example_seed_example,
        asan_example_seed_example;
    "sqlite_store" => example_sqlite_store, valgrind_example_sqlite_store,
        asan_example_sqlite_store;
    "cpp_example" => example_cpp_example, valgrind_example_cpp_example,
        asan_example_cpp_example;
}

// ---- the shared library's soname, the static library's system libraries ---------------

#[test]
fn programs_record_the_versioned_soname() {
    let exe = program("api_errors");
    let out = Command::new("readelf")
        .arg("-d")
        .arg(&exe)
        .output()
        .expect("readelf (binutils) runs");
    let dynamic = String::from_utf8_lossy(&out.stdout);
    assert!(
        dynamic.contains(&format!("Shared library: [{SONAME}]")),
        "a program linked with -lmqtt must need {SONAME}:\n{dynamic}"
    );
    let link = lib_dir().join(SONAME);
    assert_eq!(
        std::fs::read_link(&link).ok().as_deref(),
        Some(Path::new("libmqtt.so")),
        "build.rs must lay out {SONAME} -> libmqtt.so beside the library"
    );
}

/// The Linux list of `MQTT_STATIC_LINK_LIBRARIES` in CMakeLists.txt (also mqtt.pc's
/// Libs.private, and documented in README.md).
fn documented_static_libs() -> Vec<String> {
    let cmake = std::fs::read_to_string(manifest_dir().join("CMakeLists.txt")).unwrap();
    let line = cmake
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("set(MQTT_STATIC_LINK_LIBRARIES") && !l.contains("System"))
        .expect("MQTT_STATIC_LINK_LIBRARIES in CMakeLists.txt");
    line.trim_start_matches("set(MQTT_STATIC_LINK_LIBRARIES")
        .trim_end_matches(')')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// `-lfoo` entries of rustc's `--print native-static-libs` for a staticlib built by this
/// toolchain (the list comes from std: libmqtt's dependencies add no native library).
fn rustc_static_libs() -> Vec<String> {
    let src = out_dir().join("native_libs_probe.rs");
    std::fs::write(&src, "pub fn probe() {}\n").unwrap();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args([
            "--crate-type",
            "staticlib",
            "--crate-name",
            "native_libs_probe",
        ])
        .args(["--print", "native-static-libs", "-o"])
        .arg(out_dir().join("libnative_libs_probe.a"))
        .arg(&src)
        .output()
        .expect("run rustc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| {
            l.split_once("native-static-libs:")
                .map(|(_, libs)| libs.to_owned())
        })
        .unwrap_or_else(|| panic!("no native-static-libs note in:\n{text}"));
    line.split_whitespace()
        .filter_map(|l| l.strip_prefix("-l").map(str::to_owned))
        .collect()
}

/// A program linked against libmqtt.a plus the documented system libraries (nothing
/// else, no libmqtt.so) builds, does not depend on libmqtt.so, and works.
#[test]
fn static_link_with_the_documented_system_libraries() {
    if !cfg!(target_os = "linux") {
        eprintln!("the documented list is for Linux: skipped");
        return;
    }
    let documented = documented_static_libs();
    let mut wanted = rustc_static_libs();
    wanted.dedup();
    assert_eq!(
        documented, wanted,
        "CMakeLists.txt lists other system libraries than rustc needs"
    );
    let flags: Vec<String> = documented.iter().map(|l| format!("-l{l}")).collect();

    let archive = lib_dir().join("libmqtt.a");
    assert!(archive.exists(), "{} missing", archive.display());
    let src = source_of("seed_example");
    let exe = out_dir().join("seed_example-static");
    let mut cmd = Command::new(c_compiler());
    cmd.args(C_FLAGS)
        .arg("-I")
        .arg(include_dir())
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .arg(&archive)
        .args(&flags);
    compile(cmd, "seed_example.c linked statically");
    let out = Command::new("readelf")
        .arg("-d")
        .arg(&exe)
        .output()
        .unwrap();
    let dynamic = String::from_utf8_lossy(&out.stdout);
    assert!(
        !dynamic.contains("libmqtt"),
        "depends on libmqtt.so:\n{dynamic}"
    );

    let broker = Broker::start();
    let mut run = Command::new(&exe);
    run.arg(broker.host()).arg(broker.port().to_string());
    let run = run_bounded(run, RUN_TIMEOUT);
    assert!(
        run.success(),
        "{}\n--- broker log ---\n{}",
        run.describe("statically linked seed_example"),
        broker.log()
    );
}

// ---- CMake and pkg-config consumers ----------------------------------------------------

fn tool_available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn cmake_consumer() {
    if std::env::var_os("MQTT_SKIP_CMAKE_CONSUMER").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("MQTT_SKIP_CMAKE_CONSUMER set: skipped");
        return;
    }
    let missing: Vec<&str> = ["cmake", "pkg-config"]
        .into_iter()
        .filter(|t| !tool_available(t))
        .collect();
    if !missing.is_empty() {
        eprintln!("{} not installed: skipped", missing.join(", "));
        return;
    }
    // a kept work dir: the second run only rebuilds what changed
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cmake_consumer");
    let mut cmd = Command::new("sh");
    cmd.arg(manifest_dir().join("tests/cmake_consumer/run.sh"))
        .arg(&work);
    let run = run_bounded(cmd, Duration::from_secs(1200));
    assert!(
        run.success(),
        "{}",
        run.describe("tests/cmake_consumer/run.sh")
    );
}
