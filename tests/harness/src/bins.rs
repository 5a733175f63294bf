//! Where the `vigil` and `vigil-workload` binaries are.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The `vigil` binary under test: `VIGIL_BIN`, or the debug build in the
/// workspace's `target` directory. Panics when neither exists.
#[must_use]
pub fn vigil_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VIGIL_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/vigil");
    assert!(
        p.exists(),
        "vigil binary not found at {}: build it (`cargo build -p vigil`) or set VIGIL_BIN",
        p.display()
    );
    p
}

/// The workload helper binary: `VIGIL_WORKLOAD`, or the one cargo built next
/// to the running executable. Panics when there is none.
#[must_use]
pub fn workload_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VIGIL_WORKLOAD") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // Binaries sit next to each other; test binaries one level down, in deps/.
    let here = exe.parent().expect("executable directory");
    [here, here.parent().unwrap_or(here)]
        .iter()
        .map(|d| d.join("vigil-workload"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("vigil-workload not built next to {}", exe.display()))
}

/// The daemon and the workload as one cargo build left them.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub vigil: PathBuf,
    pub workload: PathBuf,
}

impl Binaries {
    /// Both binaries in a cargo profile directory (`target/debug`,
    /// `target/release`), with symlinks resolved: a config that names the
    /// workload as a tool must name it as the kernel reports it.
    pub fn in_dir(profile_dir: &Path) -> anyhow::Result<Self> {
        let built = |name: &str| -> anyhow::Result<PathBuf> {
            let bin = profile_dir.join(name);
            if !bin
                .try_exists()
                .with_context(|| format!("checking {}", bin.display()))?
            {
                bail!("{} is missing after the build", bin.display());
            }
            bin.canonicalize()
                .with_context(|| format!("resolving {}", bin.display()))
        };
        Ok(Self {
            vigil: built("vigil")?,
            workload: built("vigil-workload")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_are_found_resolved_or_said_missing() {
        let dir = tempfile::tempdir().unwrap();
        let e = Binaries::in_dir(dir.path()).unwrap_err().to_string();
        assert!(e.ends_with("vigil is missing after the build"), "{e}");
        std::fs::write(dir.path().join("vigil"), "").unwrap();
        let e = Binaries::in_dir(dir.path()).unwrap_err().to_string();
        assert!(
            e.ends_with("vigil-workload is missing after the build"),
            "{e}"
        );
        let real = dir.path().join("real-workload");
        std::fs::write(&real, "").unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("vigil-workload")).unwrap();
        let bins = Binaries::in_dir(dir.path()).unwrap();
        assert_eq!(bins.workload, real.canonicalize().unwrap());
        assert_eq!(bins.vigil, dir.path().join("vigil").canonicalize().unwrap());
    }
}
