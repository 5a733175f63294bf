//! An agent session driven one action at a time.

use std::{
    io::{self, BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Stdio},
};

use anyhow::{Context as _, bail};

use crate::Daemon;

/// A `vigil-workload serve` process in an agent session: it performs one
/// action per line on its stdin and answers each on its stdout (`ok`,
/// `err ERRNO`, `exit N`, `signal N`). Killed when dropped.
pub struct Served {
    agent: String,
    session: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Served {
    /// Starts `WORKLOAD serve` as session `session` of `agent` of `daemon`
    /// (through `vigil exec`, whose stderr and the workload's go to
    /// `stderr`) and waits until it says it is ready.
    pub fn start(
        daemon: &Daemon,
        workload: &Path,
        agent: &str,
        session: &str,
        stderr: Stdio,
    ) -> anyhow::Result<Self> {
        let mut exec = daemon.exec(agent, session);
        exec.arg(workload)
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = exec.spawn().with_context(|| {
            format!("starting session {session} of agent {agent} with `vigil exec`")
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("session {session}: stdin and stdout were not piped");
        };
        let mut served = Self {
            agent: agent.to_owned(),
            session: session.to_owned(),
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        match served.read_line() {
            Ok(Some(line)) if line == "ready" => Ok(served),
            other => bail!(
                "session {session} of agent {agent} did not start (it said {:?})",
                other.ok().flatten()
            ),
        }
    }

    #[must_use]
    pub fn agent(&self) -> &str {
        &self.agent
    }

    #[must_use]
    pub fn session(&self) -> &str {
        &self.session
    }

    fn read_line(&mut self) -> io::Result<Option<String>> {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line)?;
        Ok((n > 0).then(|| line.trim().to_owned()))
    }

    /// Sends one action and reads its answer; `None` when the process died
    /// instead of answering.
    pub fn ask(&mut self, action: &str) -> io::Result<Option<String>> {
        let sent = writeln!(self.stdin, "{action}").and_then(|()| self.stdin.flush());
        if sent.is_err() {
            return Ok(None);
        }
        self.read_line()
    }

    /// Waits for the process and returns the signal that ended it, if any.
    pub fn wait_signal(&mut self) -> io::Result<Option<i32>> {
        use std::os::unix::process::ExitStatusExt as _;
        Ok(self.child.wait()?.signal())
    }

    /// Kills the process and waits for it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop();
    }
}
