//! Python from the package index for the tests that use an independent
//! client or server: one venv under `target/python/` with the exact pins of
//! `tests/python/requirements.txt`, made when it is missing or the pins
//! changed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
#[must_use]
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace")
        .to_owned()
}

/// Runs `cmd`, panicking with its output when it fails; its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The venv's python, with the pinned packages installed.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let pins = std::fs::read_to_string(repo().join("tests/python/requirements.txt"))
            .expect("tests/python/requirements.txt");
        // The test binary is target/<profile>/deps/NAME.
        let exe = std::env::current_exe().expect("test binary path");
        let target = exe
            .ancestors()
            .nth(3)
            .expect("the test binary is under target/");
        let venv = target.join("python/venv");
        let stamp = venv.join("vigil-requirements.txt");
        let bin = venv.join("bin/python");
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(pins.as_str()) && bin.exists() {
            return bin;
        }
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(&bin)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                "-r",
            ])
            .arg(repo().join("tests/python/requirements.txt")));
        std::fs::write(&stamp, &pins).expect("venv stamp");
        bin
    })
}
