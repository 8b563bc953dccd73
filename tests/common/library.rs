//! The cdylib and staticlib that cargo built, for tests that link or inspect them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The library's DT_SONAME: what programs linked with `-lmqtt` load at run time.
pub const SONAME: &str = "libmqtt.so.0";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn newest_mtime(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let t = if path.is_dir() {
                newest_mtime(&path)
            } else {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            };
            newest = newest.max(t);
        }
    }
    newest
}

/// The directory holding an up-to-date `libmqtt.so`, `libmqtt.a` and the
/// `libmqtt.so.0` symlink that build.rs lays out beside them.
///
/// `scripts/test.sh` runs `cargo build --lib` first, so they normally sit in the
/// profile dir next to `deps/`, where this test binary lives (`cargo test` alone
/// builds only the rlib its tests need). If they are missing or older than the
/// sources, build them with `cargo build` into a separate target dir: the one cargo
/// is using may be locked by the `cargo test` that runs us.
pub fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in <target>/<profile>/deps")
            .to_path_buf();
        let so = profile_dir.join("libmqtt.so");
        let sources = newest_mtime(&manifest_dir().join("src"));
        let fresh = |file: &Path| {
            file.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= sources)
        };
        if fresh(&so) && fresh(&profile_dir.join("libmqtt.a")) {
            return profile_dir;
        }
        eprintln!(
            "{} is missing or stale: building it with cargo build",
            so.display()
        );
        let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("library-cargo");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.arg("build")
            .arg("--lib")
            .arg("--manifest-path")
            .arg(manifest_dir().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build --lib failed");
        let dir = target_dir.join(if release { "release" } else { "debug" });
        assert!(
            dir.join("libmqtt.so").exists(),
            "cargo build made no libmqtt.so"
        );
        dir
    })
}
