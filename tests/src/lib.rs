//! Helpers shared by the end-to-end tests in `tests/`: where the repository and the shared
//! data sets are, and the `renketsu` binary under test.

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// The `renketsu` binary of this build (built on demand when this crate is tested alone).
///
/// # Panics
/// If the binary is missing and `cargo build` fails.
pub fn bin() -> PathBuf {
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
    path
}
