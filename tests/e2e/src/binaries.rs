//! Where the `roomcast-operator` and `roomcast-gateway` executables come from.
//!
//! Cargo exposes `CARGO_BIN_EXE_*` only for a package's own binaries, so the suite builds the
//! two packages' binaries itself, once per test process, into the target directory the test
//! executable lives in (`<target>/<profile>/deps/<test>` → `<target>/<profile>/`), with
//! `cargo build --bins -p roomcast-gateway -p roomcast-operator`. When they are up to date that
//! is a no-op. `ROOMCAST_E2E_BIN_DIR` names a directory of prebuilt binaries instead (no build).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::OnceCell;

static BIN_DIR: OnceCell<PathBuf> = OnceCell::const_new();

/// How long the one-time build may take on a slow machine.
const BUILD_DEADLINE: Duration = Duration::from_secs(1800);

/// The directory holding both executables, built if needed.
pub async fn bin_dir() -> &'static Path {
    BIN_DIR.get_or_init(locate_or_build).await
}

/// Path of the operator executable.
pub async fn operator() -> PathBuf {
    bin_dir().await.join("roomcast-operator")
}

/// Path of the gateway executable.
pub async fn gateway() -> PathBuf {
    bin_dir().await.join("roomcast-gateway")
}

async fn locate_or_build() -> PathBuf {
    if let Some(dir) = std::env::var_os("ROOMCAST_E2E_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    // <target>/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test executable path {}", exe.display()))
        .to_path_buf();
    let target_dir = profile_dir
        .parent()
        .unwrap_or_else(|| panic!("no target dir above {}", profile_dir.display()));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = tokio::process::Command::new(cargo);
    cmd.current_dir(&workspace)
        .env("CARGO_TARGET_DIR", target_dir)
        .args([
            "build",
            "--bins",
            "-p",
            "roomcast-gateway",
            "-p",
            "roomcast-operator",
        ])
        .kill_on_drop(true);
    // The variables cargo sets for this test process (its package's manifest
    // dir and metadata) would reach build scripts that read them (ring's does):
    // they would rebuild ring and everything above it, the two binaries too,
    // replacing them under the tests running them in parallel.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_for_the_test) {
            cmd.env_remove(&name);
        }
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = tokio::time::timeout(BUILD_DEADLINE, cmd.status())
        .await
        .unwrap_or_else(|_| panic!("building the binaries took over {BUILD_DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("cannot run cargo: {e}"));
    assert!(
        status.success(),
        "cargo build of the binaries failed: {status}"
    );
    profile_dir
}

/// Whether `name` is one of the variables cargo sets for a test of one
/// package (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, …), as opposed to the
/// user's own cargo settings (`CARGO_HOME`, `CARGO_BUILD_JOBS`, …).
fn set_by_cargo_for_the_test(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
    ];
    EXACT.contains(&name) || name.starts_with("CARGO_PKG_") || name.starts_with("CARGO_BIN_EXE_")
}

#[cfg(test)]
mod tests {
    use super::set_by_cargo_for_the_test;

    #[test]
    fn only_the_test_packages_variables_are_dropped() {
        for name in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_BIN_EXE_roomcast-operator",
        ] {
            assert!(set_by_cargo_for_the_test(name), "{name}");
        }
        for name in [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "CARGO",
            "PATH",
        ] {
            assert!(!set_by_cargo_for_the_test(name), "{name}");
        }
    }
}
