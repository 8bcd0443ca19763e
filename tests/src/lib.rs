//! Helpers shared by the end-to-end tests in `tests/`: where the repository and the shared
//! data sets are, and the `renketsu` binary under test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (the parent of this crate's directory).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// `../shared/data` beside the repository (the benchmark data sets with ground truth).
///
/// # Panics
/// If the directory does not exist: the end-to-end tests need it.
pub fn shared_data() -> PathBuf {
    let p = repo().join("../shared/data");
    assert!(
        p.is_dir(),
        "the shared data sets are expected at {}",
        p.display()
    );
    p
}

/// The `renketsu` binary of this build (built on demand when this crate is tested alone),
/// found and checked once per test process.
///
/// # Panics
/// If the binary is missing and `cargo build` fails, or it is older than its sources.
pub fn bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(find_bin).clone()
}

fn find_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(format!("renketsu{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "renketsu-cli", "--bin", "renketsu"])
            .current_dir(repo())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build -p renketsu-cli failed");
    }
    if let Some(newer) = newer_source(&path) {
        panic!(
            "{} is older than {}: these tests run the binary as it is; build it first \
             (cargo build -p renketsu-cli --features parquet, or cargo test --workspace)",
            path.display(),
            newer.display()
        );
    }
    path
}

/// A source file of the crates the CLI is built from that is newer than `binary`, if any.
fn newer_source(binary: &Path) -> Option<PathBuf> {
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
    let root = repo();
    let mut stack: Vec<PathBuf> = [
        "clients",
        "client",
        "linkage/core",
        "linkage/service",
        "keys",
        "protocol",
        "rpc",
        "synth",
    ]
    .iter()
    .map(|d| root.join(d))
    .collect();
    stack.push(root.join("Cargo.lock"));
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if p.file_name()
                .is_some_and(|n| n == "tests" || n == "benches" || n == "fuzz" || n == "target")
            {
                continue;
            }
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if meta.modified().is_ok_and(|m| m > built) {
            return Some(p);
        }
    }
    None
}

/// `renketsu ARGS` in `dir`, with the key store in `dir/keys` and none of the caller's
/// `RENKETSU_*` connection settings (so a developer's environment cannot leak into a test).
pub fn cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .current_dir(dir)
        .env("RENKETSU_KEY_STORE", dir.join("keys"));
    for v in [
        "RENKETSU_KEK",
        "RENKETSU_PROJECT",
        "RENKETSU_CUSTODIAN",
        "RENKETSU_LU",
        "RENKETSU_CA",
        "RENKETSU_CERT",
        "RENKETSU_CERT_KEY",
        "RENKETSU_LU_TEST_PAUSE_MS",
        "RUST_BACKTRACE",
    ] {
        c.env_remove(v);
    }
    c
}

/// Runs [`cmd`] and returns its output.
///
/// # Panics
/// If the command fails (its stderr is in the message).
pub fn ok(dir: &Path, args: &[&str]) -> Output {
    let out = cmd(dir, args).output().expect("renketsu runs");
    assert!(
        out.status.success(),
        "renketsu {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
