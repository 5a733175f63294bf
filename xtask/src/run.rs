//! `cargo xtask run`: build the daemon and run it in the foreground.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context as _, Result};
use nix::libc;
use nix::sys::signal::{
    SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, pthread_sigmask, sigaction,
};

use crate::{cmd, setup, workspace};

/// Signals meant for the daemon when typed at the terminal or sent to xtask.
const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Pid of the daemon, read by the signal handler.
static CHILD: AtomicI32 = AtomicI32::new(0);

pub fn run(args: &[OsString]) -> Result<ExitCode> {
    setup::ensure(setup::Scope::Kernel, setup::Report::Changes)?;
    workspace::build_vigil()?;
    let bin = workspace::vigil_debug_bin(&workspace::Metadata::load()?)?;
    let mut daemon = cmd::new(&bin);
    daemon.arg("run").args(args);
    let code = run_forwarding_signals(&mut daemon)?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Runs `cmd` in its own process group and relays termination signals to it,
/// so Ctrl-C reaches the daemon exactly once (not once from the terminal and
/// once from us) and xtask waits for its shutdown instead of dying first and
/// leaving it printing behind the shell prompt. Returns the shell-style exit
/// code: the child's, or 128 + the signal that killed it.
fn run_forwarding_signals(cmd: &mut Command) -> Result<i32> {
    let mut forwarded = SigSet::empty();
    for signal in FORWARDED {
        forwarded.add(signal);
    }
    // Blocked until the pid is known, so a Ctrl-C during spawn is delivered
    // to the handler afterwards instead of finding no child to forward to.
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), None).context("blocking signals")?;
    // std lets the child inherit the signal mask; the daemon must not start
    // with its shutdown signals blocked.
    // SAFETY: pthread_sigmask is async-signal-safe and touches no memory
    // shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&forwarded), None)
                .map_err(std::io::Error::from)
        });
    }
    let action = SigAction::new(
        SigHandler::Handler(forward),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in FORWARDED {
        // SAFETY: `forward` only reads an atomic and calls kill(2), both
        // async-signal-safe.
        unsafe { sigaction(signal, &action) }
            .with_context(|| format!("installing a {signal} handler"))?;
    }
    eprintln!("$ {}", cmd::display(cmd));
    // The daemon never reads stdin; in a background process group a read
    // would stop it with SIGTTIN.
    let spawned = cmd.stdin(Stdio::null()).process_group(0).spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&forwarded), None).ok();
            return Err(e).with_context(|| format!("starting `{}`", cmd::display(cmd)));
        }
    };
    CHILD.store(child.id().cast_signed(), Ordering::SeqCst);
    pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&forwarded), None)
        .context("unblocking signals")?;
    let status = child.wait().context("waiting for the daemon")?;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    if !status.success() {
        eprintln!("xtask: `{}` exited with {status}", cmd::display(cmd));
    }
    Ok(code)
}

extern "C" fn forward(signal: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the handler's pid is process-wide, so scenarios must not
    // run in parallel.
    #[test]
    fn signals_reach_the_child_once_and_its_exit_code_comes_back() {
        // The child signals its parent (this test process); only forwarding
        // can bring it back to the child, whose trap counts deliveries.
        let mut sh = Command::new("sh");
        sh.args([
            "-c",
            "n=0; trap 'n=$((n+1))' INT; sleep 0.1; kill -INT $PPID; \
             sleep 0.3 & wait $!; exit $((40+n))",
        ]);
        assert_eq!(run_forwarding_signals(&mut sh).unwrap(), 41);

        let mut sh = Command::new("sh");
        sh.args(["-c", "kill -TERM $$; sleep 1"]);
        assert_eq!(run_forwarding_signals(&mut sh).unwrap(), 128 + 15);
    }
}
