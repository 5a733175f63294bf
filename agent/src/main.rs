//! The `vigil` binary: parses the command line and hands it to the library.

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

// The daemon allocates per event on several threads at once (the ring-buffer
// reader, the journal commit, one stream per subscriber). glibc's allocator
// spent about a fifth of the daemon's time there under a heavy flow, much of
// it consolidating and unlinking free chunks; mimalloc's per-thread free
// lists cost a fraction of that (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its `mimalloc.h`; the sys crate
/// names no constant for it): how long freed pages stay committed.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the kernel at once. With mimalloc's default
/// delay (10 ms, purged only when that thread allocates again) the pages
/// that a burst of events or a replay freed stay resident on threads that
/// went quiet: about 35 MiB of the daemon's RSS at 10,000 events/s, for no
/// measurable CPU (docs/reliability.md, soak).
fn return_freed_memory_at_once() {
    // SAFETY: sets one process-wide option; mimalloc reads it at each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

/// Async worker threads: the heavy paths (ring reader, journal) have
/// threads of their own, and each worker keeps its own allocator heap, so a
/// 64-core node gets no more than a small one.
const MAX_WORKERS: usize = 4;

fn main() -> std::process::ExitCode {
    return_freed_memory_at_once();
    let cli = vigil::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vigil: error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vigil::cli::dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option number is mimalloc's purge delay: the value of
    /// `MIMALLOC_PURGE_DELAY` in a child's environment is what it reads.
    #[test]
    fn the_purge_delay_option_is_the_one_mimalloc_reads_from_its_variable() {
        if let Ok(expected) = std::env::var("VIGIL_TEST_PURGE_DELAY") {
            // SAFETY: reads one option.
            let got = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
            assert_eq!(got.to_string(), expected);
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tests::the_purge_delay_option_is_the_one_mimalloc_reads_from_its_variable",
            ])
            .env("VIGIL_TEST_PURGE_DELAY", "1234")
            .env("MIMALLOC_PURGE_DELAY", "1234")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "{out:?}"
        );
        return_freed_memory_at_once();
        // SAFETY: reads one option.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            0
        );
    }
}
