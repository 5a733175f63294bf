//! Helpers around `std::process::Command` that show what they run.
//!
//! Commands that build, test or change the machine are always echoed (`$ ...`
//! on stderr) so a CI log can be replayed by hand. Read-only probes (version
//! checks, listings) stay quiet unless `--verbose` is given, because setup runs
//! a dozen of them on every `cargo xtask test`.

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result, bail};

use crate::workspace;

static VERBOSE: AtomicBool = AtomicBool::new(false);

pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

/// A command that runs from the workspace root, whatever directory
/// `cargo xtask` was started from.
pub fn new(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace::root());
    cmd
}

/// Runs `cmd` through the nightly toolchain (`rustup run nightly ...`).
///
/// `cargo xtask` itself runs under the pinned stable toolchain, and cargo
/// exports `RUSTC` to some children: a leftover `RUSTC` would make the nightly
/// cargo drive the stable compiler.
pub fn nightly(program: &str) -> Command {
    let mut cmd = new("rustup");
    cmd.args(["run", "nightly", program])
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    cmd
}

/// Echoes `cmd`, runs it and fails unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed: {status}", display(cmd));
    }
    Ok(())
}

/// Echoes `cmd` and runs it, returning its exit status whatever it is.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    echo(cmd);
    cmd.status().map_err(|e| spawn_error(cmd, &e))
}

/// Echoes `cmd` and runs it with stdout piped through this process: every line
/// is printed as it arrives and handed to `on_line`, so callers can pick
/// results out of a test or bench run without hiding its output.
pub fn stream(cmd: &mut Command, mut on_line: impl FnMut(&str)) -> Result<ExitStatus> {
    echo(cmd);
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(cmd, &e))?;
    let stdout = child
        .stdout
        .take()
        .context("child stdout was not captured")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.with_context(|| format!("reading the output of `{}`", display(cmd)))?;
        println!("{line}");
        on_line(&line);
    }
    child
        .wait()
        .with_context(|| format!("waiting for `{}`", display(cmd)))
}

/// Runs a read-only probe and returns its stdout; a non-zero exit is an error
/// carrying the probe's stderr.
pub fn probe(cmd: &mut Command) -> Result<String> {
    if VERBOSE.load(Ordering::Relaxed) {
        echo(cmd);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(cmd, &e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "`{}` failed ({}): {}",
            display(cmd),
            out.status,
            stderr.trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", display(cmd)))
}

fn echo(cmd: &Command) {
    eprintln!("$ {}", display(cmd));
}

fn spawn_error(cmd: &Command, err: &std::io::Error) -> anyhow::Error {
    if err.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!(
            "`{}` not found on PATH",
            cmd.get_program().to_string_lossy()
        )
    } else {
        anyhow::anyhow!("cannot start `{}`: {err}", display(cmd))
    }
}

/// Renders `cmd` as a shell line: environment overrides, program, arguments,
/// and the directory when it is not the workspace root.
pub fn display(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), quote(v))))
        .collect();
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    let mut line = parts.join(" ");
    if let Some(dir) = cmd.get_current_dir()
        && dir != workspace::root()
    {
        let shown = dir.strip_prefix(workspace::root()).unwrap_or(dir);
        line = format!("(cd {} && {line})", quote(shown.as_os_str()));
    }
    line
}

fn quote(arg: impl AsRef<OsStr>) -> String {
    let s = arg.as_ref().to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=:,@+%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Whether `path` exists, with the error that explains why we could not tell.
pub fn exists(path: &Path) -> Result<bool> {
    path.try_exists()
        .with_context(|| format!("checking {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(quote("--test-threads=2"), "--test-threads=2");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn display_shows_env_and_directory() {
        let mut cmd = new("cargo");
        cmd.arg("fmt")
            .env("LLVM_PREFIX", "/x y")
            .current_dir(workspace::root().join("ebpf/vigil-ebpf"));
        assert_eq!(
            display(&cmd),
            "(cd ebpf/vigil-ebpf && LLVM_PREFIX='/x y' cargo fmt)"
        );
    }
}
