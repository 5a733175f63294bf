//! The sensor reader: one dedicated OS thread that owns the kernel ring
//! buffer and the [`Pipeline`], so the path from a kernel record to a scope
//! verdict (and to an automatic revocation) is a single wake-up of a single
//! thread, never a hop through the async runtime's reactor and scheduler.
//!
//! The kernel wakes the reader only for records that need action now and
//! when the ring buffer fills up (see `KernelConfig::wake_bytes`); the rest
//! it collects every `daemon.reader_interval_ms`. A wake-up per record would
//! cost each watched syscall an inter-processor interrupt.
//!
//! The thread runs at a raised priority (`daemon.reader_nice`) with a short
//! time slice: on a busy node a freshly woken reader then preempts ordinary
//! work at once instead of waiting for the running task's slice to end,
//! which is what keeps automatic revocation within a millisecond of the
//! offending syscall. It stays an ordinary (`SCHED_OTHER`) thread, so an
//! event flood cannot starve the node.

use std::{
    os::fd::AsFd as _,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::eventfd::{EfdFlags, EventFd},
};
use tokio::sync::{mpsc, oneshot};

use super::pipeline::Pipeline;
use crate::event::Event;
use crate::journal::publisher::{self, Publisher};

/// Most records read from the ring buffer before the batch is handed on,
/// so a flood still reaches subscribers in steady steps.
const MAX_DRAIN: usize = publisher::MAX_COMMIT_EVENTS;
/// How often the pipeline's housekeeping ([`Pipeline::tick`]) runs.
const TICK: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error("creating the reader's stop signal: {0}")]
    EventFd(#[source] nix::Error),
    #[error("starting the reader thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("polling the ring buffer: {0}")]
    Poll(#[source] nix::Error),
    #[error("the event publisher stopped")]
    PublisherStopped,
    #[error("the reader thread panicked")]
    Panicked,
}

/// How the reader runs.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Nice value of the thread (`daemon.reader_nice`).
    pub nice: i32,
    /// Longest wait before collecting records that did not wake the reader
    /// (`daemon.reader_interval_ms`); zero waits for a wake-up.
    pub interval: Duration,
}

/// A running reader; [`Reader::stop`] drains what the kernel delivered and
/// hands it on before the thread ends.
pub struct Reader {
    stop: Arc<EventFd>,
    thread: JoinHandle<Result<(), ReaderError>>,
    ended: Option<oneshot::Receiver<()>>,
}

impl Reader {
    /// Starts the reader thread on `ring`. `nice` is applied to the thread
    /// (a failure to raise it is logged, not fatal: the reader still works,
    /// with ordinary latency).
    pub fn spawn(
        ring: RingBuf<MapData>,
        pipeline: Pipeline,
        publisher: Publisher,
        new_cgroups: mpsc::UnboundedReceiver<(u64, String)>,
        options: Options,
    ) -> Result<Self, ReaderError> {
        let stop = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(ReaderError::EventFd)?,
        );
        let thread_stop = Arc::clone(&stop);
        let (nice, interval) = (options.nice, options.interval);
        // Dropped when the thread ends, also by a panic.
        let (ended_tx, ended) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("vigil-reader".into())
            .spawn(move || {
                let _ended = ended_tx;
                set_priority(nice);
                Loop {
                    interval,
                    ring,
                    pipeline,
                    publisher,
                    new_cgroups,
                    batch: Vec::new(),
                }
                .run(&thread_stop)
            })
            .map_err(ReaderError::Spawn)?;
        Ok(Self {
            stop,
            thread,
            ended: Some(ended),
        })
    }

    /// Completes when the thread ends on its own (an error or a panic);
    /// [`Reader::stop`] then says why. Pending forever after the first call.
    pub fn ended(&mut self) -> impl std::future::Future<Output = ()> + use<> {
        let ended = self.ended.take();
        async move {
            match ended {
                Some(rx) => {
                    let _ = rx.await;
                }
                None => std::future::pending().await,
            }
        }
    }

    /// Asks the thread to drain the ring buffer and stop, and waits for it.
    pub fn stop(self) -> Result<(), ReaderError> {
        // Cannot fail short of a counter overflow; the thread also ends
        // when its publisher goes away.
        let _ = self.stop.write(1);
        self.thread.join().map_err(|_| ReaderError::Panicked)?
    }
}

/// Time slice the reader asks the scheduler for. EEVDF lets a waking task
/// with a shorter slice preempt the running one at once; with the default
/// slice a woken reader may wait for a busy CPU's current slice (milliseconds)
/// to end, whatever its nice value.
const READER_SLICE_NS: u64 = 100_000;

/// `struct sched_attr` (first version, 48 bytes) of `sched_setattr(2)`.
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Gives the calling thread `nice` and a short time slice (still
/// `SCHED_OTHER`); falls back to `setpriority` where the kernel refuses the
/// slice, and logs when neither is allowed.
fn set_priority(nice: i32) {
    let tid = nix::unistd::gettid().as_raw();
    let attr = SchedAttr {
        size: size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice,
        priority: 0,
        runtime: READER_SLICE_NS,
        deadline: 0,
        period: 0,
    };
    // SAFETY: sched_setattr reads `size` bytes of a valid, initialised struct.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0) };
    if rc == 0 {
        tracing::debug!(
            "reader thread {tid}: nice {nice}, {} µs slice",
            READER_SLICE_NS / 1000
        );
        return;
    }
    let slice_error = std::io::Error::last_os_error();
    // SAFETY: plain syscall on this thread's id.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc == 0 {
        tracing::info!("reader thread {tid}: nice {nice}; short slice refused ({slice_error})");
    } else {
        tracing::warn!(
            "could not raise the reader thread's priority (nice {nice}: {}): event handling keeps ordinary priority",
            std::io::Error::last_os_error()
        );
    }
}

struct Loop {
    interval: Duration,
    ring: RingBuf<MapData>,
    pipeline: Pipeline,
    publisher: Publisher,
    new_cgroups: mpsc::UnboundedReceiver<(u64, String)>,
    batch: Vec<Event>,
}

impl Loop {
    fn run(mut self, stop: &EventFd) -> Result<(), ReaderError> {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let mut wait = next_tick.saturating_duration_since(Instant::now());
            if !self.interval.is_zero() {
                wait = wait.min(self.interval);
            }
            let stopping = self.wait(stop, wait)?;
            self.learn_cgroups();
            // Records that did not wake the reader are collected on every
            // round (an empty ring costs two loads). A capped drain hands
            // each step on, so a flood reaches subscribers steadily.
            while !self.drain() {
                self.send()?;
            }
            self.send()?;
            if Instant::now() >= next_tick {
                self.pipeline.tick(&mut self.batch);
                next_tick = Instant::now() + TICK;
            }
            if stopping {
                break;
            }
        }
        // Whatever the kernel delivered before the stop still goes out.
        while !self.drain() {
            self.send()?;
        }
        self.pipeline.finish(&mut self.batch);
        self.send()
    }

    /// Waits for a wake-up by the kernel, the stop signal or the timeout;
    /// true when stopping.
    fn wait(&self, stop: &EventFd, timeout: Duration) -> Result<bool, ReaderError> {
        let ms = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [
            PollFd::new(self.ring.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(ReaderError::Poll(e)),
        }
        Ok(fds[1].revents().is_some_and(|r| !r.is_empty()))
    }

    fn learn_cgroups(&mut self) {
        while let Ok((id, path)) = self.new_cgroups.try_recv() {
            self.pipeline.learn_cgroup(id, &path);
        }
    }

    /// Reads up to [`MAX_DRAIN`] records into the batch: each event followed
    /// by what it caused. True when the ring buffer was emptied.
    fn drain(&mut self) -> bool {
        for _ in 0..MAX_DRAIN {
            let Some(item) = self.ring.next() else {
                return true;
            };
            self.pipeline.process_bytes(&item, &mut self.batch);
            drop(item);
        }
        false
    }

    /// Hands the batch to the publisher, waiting while its queue is full.
    fn send(&mut self) -> Result<(), ReaderError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.publisher
            .batch_blocking(std::mem::take(&mut self.batch))
            .map_err(|_| ReaderError::PublisherStopped)
    }
}
