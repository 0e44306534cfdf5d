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
