//! `cargo xtask setup`: make a fresh machine able to build, run and test Vigil.
//!
//! Every step looks before it acts, so running setup again is cheap (a few
//! `rustup` probes) and changes nothing on a ready machine.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use nix::mount::{MsFlags, mount};
use nix::unistd::geteuid;

use crate::cmd;

/// The bpf-linker release we build, and the LLVM majors it has features for.
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_MAJORS: [u32; 3] = [21, 22, 23];

/// Nightly components: `rust-src` for `-Z build-std=core`, clippy and rustfmt
/// for linting the eBPF crate (which only the nightly can compile).
const NIGHTLY_COMPONENTS: [&str; 3] = ["rust-src", "clippy", "rustfmt"];

/// A pseudo filesystem the daemon needs mounted.
struct PseudoFs {
    name: &'static str,
    fstype: &'static str,
    point: &'static str,
}

const TRACEFS: PseudoFs = PseudoFs {
    name: "tracefs",
    fstype: "tracefs",
    point: "/sys/kernel/tracing",
};
const BPFFS: PseudoFs = PseudoFs {
    name: "bpffs",
    fstype: "bpf",
    point: "/sys/fs/bpf",
};

/// What a step needs to cover.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Enough to compile everything, including the eBPF object.
    Toolchain,
    /// Also root and the kernel filesystems, to run the daemon.
    Kernel,
}

/// How much a setup run prints.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// One line per step (`cargo xtask setup`).
    Every,
    /// Only steps that changed something, then one summary line (setup as a
    /// prelude to run, test, lint and bench).
    Changes,
}

enum Outcome {
    Found(String),
    Done(String),
}

struct Steps {
    report: Report,
    checked: usize,
    changed: usize,
}

impl Steps {
    fn check(&mut self, name: &str, step: impl FnOnce() -> Result<Outcome>) -> Result<()> {
        let outcome = step().with_context(|| format!("setup: {name}"))?;
        self.checked += 1;
        match outcome {
            Outcome::Found(line) => {
                if self.report == Report::Every {
                    println!("setup: {line}");
                }
            }
            Outcome::Done(line) => {
                self.changed += 1;
                println!("setup: {line}");
            }
        }
        Ok(())
    }

    fn finish(&self) {
        if self.report == Report::Changes && self.changed == 0 {
            println!("setup: ready ({} checks, nothing to do)", self.checked);
        }
    }
}

/// Checks every step of `scope` and performs the ones that are missing.
pub fn ensure(scope: Scope, report: Report) -> Result<()> {
    let mut steps = Steps {
        report,
        checked: 0,
        changed: 0,
    };
    // Root first: no point spending 80 s on bpf-linker to fail at mounting.
    if scope == Scope::Kernel {
        steps.check("root", root)?;
    }
    steps.check("rustup", rustup)?;
    steps.check("nightly toolchain", nightly_toolchain)?;
    let installed = installed_nightly_components().context("setup: nightly components")?;
    for component in NIGHTLY_COMPONENTS {
        steps.check(component, || nightly_component(component, &installed))?;
    }
    let llvm = NightlyLlvm::find().context("setup: nightly libLLVM")?;
    steps.check("libLLVM links", || llvm.link())?;
    steps.check("bpf-linker", || bpf_linker(&llvm))?;
    if scope == Scope::Kernel {
        steps.check(TRACEFS.name, || mount_pseudo_fs(&TRACEFS))?;
        steps.check(BPFFS.name, || mount_pseudo_fs(&BPFFS))?;
        steps.check("python3 venv", python_venv)?;
    }
    steps.finish();
    Ok(())
}

fn root() -> Result<Outcome> {
    let uid = geteuid();
    if !uid.is_root() {
        bail!(
            "running as uid {uid}, but mounting tracefs and bpffs and loading eBPF programs \
             need root (sudo -E cargo xtask ..., or `cargo xtask test --no-kernel` for the \
             tests that need no kernel)"
        );
    }
    Ok(Outcome::Found("running as root".into()))
}

/// The test that checks the API from Python's `grpcio`
/// (`tests/tests/python_client.rs`) makes a venv and installs its pinned
/// packages into it from the Python package index; that needs `python3`
/// with `venv` and `ensurepip`, which Debian ships apart (`python3-venv`).
fn python_venv() -> Result<Outcome> {
    let probe = || cmd::probe(cmd::new("python3").args(["-c", "import venv, ensurepip"]));
    if probe().is_ok() {
        return Ok(Outcome::Found("python3 with venv present".into()));
    }
    cmd::run(cmd::new("apt-get").arg("update"))?;
    cmd::run(
        cmd::new("apt-get")
            .args([
                "install",
                "-y",
                "--no-install-recommends",
                "python3",
                "python3-venv",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    probe().context("python3 still has no venv after installing python3-venv")?;
    Ok(Outcome::Done(
        "python3 venv installed (python3-venv)".into(),
    ))
}

fn rustup() -> Result<Outcome> {
    let version = cmd::probe(cmd::new("rustup").arg("--version"))
        .context("rustup is needed for the nightly toolchain (https://rustup.rs)")?;
    Ok(Outcome::Found(format!("{} present", first_line(&version))))
}

fn nightly_toolchain() -> Result<Outcome> {
    let list = cmd::probe(cmd::new("rustup").args(["toolchain", "list"]))?;
    if has_nightly(&list) {
        return Ok(Outcome::Found("nightly toolchain present".into()));
    }
    cmd::run(cmd::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    Ok(Outcome::Done("nightly toolchain installed".into()))
}

/// Whether `rustup toolchain list` shows the floating `nightly` channel (a
/// dated `nightly-2025-01-01-...` is not what `rustup run nightly` uses).
fn has_nightly(list: &str) -> bool {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|name| {
            name == "nightly"
                || name
                    .strip_prefix("nightly-")
                    .is_some_and(|host| !host.starts_with(|c: char| c.is_ascii_digit()))
        })
}

fn installed_nightly_components() -> Result<Vec<String>> {
    let list = cmd::probe(cmd::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    Ok(list.lines().map(str::to_owned).collect())
}

fn nightly_component(component: &str, installed: &[String]) -> Result<Outcome> {
    if has_component(installed, component) {
        return Ok(Outcome::Found(format!("{component} (nightly) present")));
    }
    cmd::run(cmd::new("rustup").args(["component", "add", "--toolchain", "nightly", component]))?;
    Ok(Outcome::Done(format!("{component} (nightly) installed")))
}

/// Installed components are listed with the host triple appended
/// (`clippy-x86_64-unknown-linux-gnu`), except target-independent ones
/// (`rust-src`).
fn has_component(installed: &[String], component: &str) -> bool {
    installed.iter().any(|line| {
        line == component
            || line
                .strip_prefix(component)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|triple| triple.contains("-unknown-") || triple.contains("-apple-"))
    })
}

/// The nightly's shared libLLVM, which bpf-linker must link: the bitcode
/// rustc emits has to be read by the very same LLVM.
struct NightlyLlvm {
    /// `libLLVM.so.22.1-rust-1.97.0-nightly`: the file name is the SONAME.
    soname: String,
    /// The nightly sysroot's `lib/` that holds it.
    lib_dir: PathBuf,
    major: u32,
    /// A prefix whose `lib/` holds only links to that library, for
    /// bpf-linker's `LLVM_PREFIX`. bpf-linker records it as its rpath, so it
    /// must outlive the build: it lives in the user's cache, not in `target/`.
    prefix: PathBuf,
}

impl NightlyLlvm {
    fn find() -> Result<Self> {
        let sysroot = cmd::probe(cmd::nightly("rustc").args(["--print", "sysroot"]))?;
        let lib_dir = Path::new(sysroot.trim()).join("lib");
        let names = fs::read_dir(&lib_dir)
            .with_context(|| format!("listing {}", lib_dir.display()))?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok());
        let soname = pick_soname(names).with_context(|| {
            format!(
                "no single libLLVM.so.* in {}: the nightly should ship LLVM as a shared library",
                lib_dir.display()
            )
        })?;
        let major = llvm_major(&soname)
            .with_context(|| format!("cannot read the LLVM version from {soname}"))?;
        let prefix = cache_dir()?.join(format!("llvm-{major}"));
        Ok(Self {
            soname,
            lib_dir,
            major,
            prefix,
        })
    }

    /// Makes `prefix/lib` hold exactly `libLLVM.so` and the SONAME file, both
    /// linking to the nightly's library; stale links from an older nightly go.
    fn link(&self) -> Result<Outcome> {
        let dir = self.prefix.join("lib");
        let target = self.lib_dir.join(&self.soname);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let wanted = ["libLLVM.so", self.soname.as_str()];
        let mut changed = false;
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry
                .with_context(|| format!("listing {}", dir.display()))?
                .path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let keep = wanted.contains(&name) && fs::read_link(&path).is_ok_and(|to| to == target);
            if !keep && name.starts_with("libLLVM") {
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                changed = true;
            }
        }
        for name in wanted {
            let link = dir.join(name);
            if fs::symlink_metadata(&link).is_err() {
                symlink(&target, &link).with_context(|| {
                    format!("linking {} to {}", link.display(), target.display())
                })?;
                changed = true;
            }
        }
        let what = format!("libLLVM links in {} -> {}", dir.display(), target.display());
        Ok(if changed {
            Outcome::Done(format!("{what} created"))
        } else {
            Outcome::Found(format!("{what} present"))
        })
    }
}

fn pick_soname(names: impl Iterator<Item = String>) -> Option<String> {
    let mut found = names.filter(|n| n.starts_with("libLLVM.so."));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// `libLLVM.so.22.1-rust-1.97.0-nightly` → 22.
fn llvm_major(soname: &str) -> Option<u32> {
    let version = soname.strip_prefix("libLLVM.so.")?;
    let major: String = version.chars().take_while(char::is_ascii_digit).collect();
    major.parse().ok()
}

fn cache_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(base.join("vigil"))
}

/// bpf-linker is rebuilt only when it is missing or cannot start: after a
/// nightly update the old libLLVM is gone and the dynamic loader refuses it.
fn bpf_linker(llvm: &NightlyLlvm) -> Result<Outcome> {
    let problem = match cmd::probe(cmd::new("bpf-linker").arg("--version")) {
        Ok(version) => return Ok(Outcome::Found(format!("{} present", first_line(&version)))),
        Err(e) => e,
    };
    if !BPF_LINKER_LLVM_MAJORS.contains(&llvm.major) {
        bail!(
            "the nightly ships LLVM {}, which bpf-linker {BPF_LINKER_VERSION} has no feature for \
             (it supports {BPF_LINKER_LLVM_MAJORS:?}); update BPF_LINKER_VERSION in \
             xtask/src/setup.rs",
            llvm.major
        );
    }
    println!(
        "setup: bpf-linker unusable ({problem:#}); building it against {} (about 80 s)",
        llvm.soname
    );
    // --force: a broken copy of the same version would otherwise be kept as
    // "already installed", since cargo does not track LLVM_PREFIX.
    cmd::run(
        cmd::new("cargo")
            .args(["install", "--locked", "--force"])
            .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{}", llvm.major))
            .env("LLVM_PREFIX", &llvm.prefix),
    )?;
    let version = cmd::probe(cmd::new("bpf-linker").arg("--version")).context(
        "bpf-linker was installed but still does not start; is cargo's bin directory \
         (~/.cargo/bin) on PATH, ahead of any other bpf-linker?",
    )?;
    Ok(Outcome::Done(format!(
        "{} installed (LLVM {})",
        first_line(&version),
        llvm.major
    )))
}

fn mount_pseudo_fs(fs: &PseudoFs) -> Result<Outcome> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    if is_mounted(&mounts, fs.point, fs.fstype) {
        return Ok(Outcome::Found(format!(
            "{} mounted at {}",
            fs.name, fs.point
        )));
    }
    mount(
        Some(fs.name),
        fs.point,
        Some(fs.fstype),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mount -t {} {} {}", fs.fstype, fs.name, fs.point))?;
    Ok(Outcome::Done(format!(
        "{} was not mounted: mounted it at {}",
        fs.name, fs.point
    )))
}

/// Whether `/proc/self/mounts` has a `fstype` mount at `point`.
fn is_mounted(mounts: &str, point: &str, fstype: &str) -> bool {
    mount_points(mounts, fstype).any(|p| p == point)
}

/// Where file systems of type `fstype` are mounted, from the text of
/// `/proc/self/mounts`.
pub fn mount_points<'a>(mounts: &'a str, fstype: &'a str) -> impl Iterator<Item = &'a str> {
    mounts.lines().filter_map(move |line| {
        let mut fields = line.split_whitespace().skip(1);
        let point = fields.next()?;
        (fields.next() == Some(fstype)).then_some(point)
    })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default().trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nightly_is_found_by_channel_not_by_date() {
        let list = "stable-x86_64-unknown-linux-gnu (default)\n\
                    nightly-2025-01-01-x86_64-unknown-linux-gnu\n\
                    1.95.0-x86_64-unknown-linux-gnu (active)\n";
        assert!(!has_nightly(list));
        assert!(has_nightly(&format!(
            "{list}nightly-x86_64-unknown-linux-gnu\n"
        )));
        assert!(has_nightly(
            "nightly-x86_64-unknown-linux-gnu (active, default)\n"
        ));
    }

    #[test]
    fn components_match_with_and_without_host_triple() {
        let installed: Vec<String> = ["clippy-x86_64-unknown-linux-gnu", "rust-src"]
            .map(String::from)
            .to_vec();
        assert!(has_component(&installed, "clippy"));
        assert!(has_component(&installed, "rust-src"));
        assert!(!has_component(&installed, "rustfmt"));
        // rust-std-<triple> must not pass for rust-src, nor rust-src for rust.
        let std_only = vec!["rust-std-x86_64-unknown-linux-gnu".to_owned()];
        assert!(!has_component(&std_only, "rust-src"));
        assert!(!has_component(&installed, "rust"));
    }

    #[test]
    fn soname_is_the_single_versioned_libllvm() {
        let names = [
            "libLLVM-22-rust-1.97.0-nightly.so",
            "libLLVM.so.22.1-rust-1.97.0-nightly",
            "librustc_driver-b5a965480ee51f9a.so",
        ]
        .map(String::from);
        assert_eq!(
            pick_soname(names.into_iter()).as_deref(),
            Some("libLLVM.so.22.1-rust-1.97.0-nightly")
        );
        let two = ["libLLVM.so.21.1-rust-x", "libLLVM.so.22.1-rust-y"].map(String::from);
        assert_eq!(pick_soname(two.into_iter()), None);
        assert_eq!(pick_soname(std::iter::empty()), None);
    }

    #[test]
    fn llvm_major_comes_from_the_soname() {
        assert_eq!(llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"), Some(22));
        assert_eq!(llvm_major("libLLVM.so.rust"), None);
        assert_eq!(llvm_major("libLLVM-22.so"), None);
    }

    #[test]
    fn mounts_match_point_and_type() {
        let mounts = "sysfs /sys sysfs rw,nosuid 0 0\n\
                      tracefs /sys/kernel/debug/tracing tracefs rw 0 0\n\
                      none /sys/fs/bpf bpf rw,nosuid 0 0\n";
        assert!(is_mounted(mounts, "/sys/fs/bpf", "bpf"));
        assert!(!is_mounted(mounts, "/sys/kernel/tracing", "tracefs"));
        assert!(!is_mounted(mounts, "/sys", "tracefs"));
    }

    #[test]
    fn link_creates_then_finds_then_repairs() {
        let tmp = tempfile::tempdir().unwrap();
        let sysroot_lib = tmp.path().join("sysroot/lib");
        fs::create_dir_all(&sysroot_lib).unwrap();
        let llvm = NightlyLlvm {
            soname: "libLLVM.so.22.1-rust-1.97.0-nightly".into(),
            lib_dir: sysroot_lib.clone(),
            major: 22,
            prefix: tmp.path().join("prefix"),
        };
        let lib = llvm.prefix.join("lib");
        assert!(matches!(llvm.link().unwrap(), Outcome::Done(_)));
        assert!(matches!(llvm.link().unwrap(), Outcome::Found(_)));
        // A link left by an older nightly is replaced.
        symlink(
            sysroot_lib.join("gone"),
            lib.join("libLLVM.so.21.1-rust-old"),
        )
        .unwrap();
        fs::remove_file(lib.join("libLLVM.so")).unwrap();
        symlink(sysroot_lib.join("gone"), lib.join("libLLVM.so")).unwrap();
        assert!(matches!(llvm.link().unwrap(), Outcome::Done(_)));
        let mut names: Vec<_> = fs::read_dir(&lib)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["libLLVM.so", "libLLVM.so.22.1-rust-1.97.0-nightly"]);
        for name in names {
            assert_eq!(
                fs::read_link(lib.join(name)).unwrap(),
                sysroot_lib.join(&llvm.soname)
            );
        }
    }
}
