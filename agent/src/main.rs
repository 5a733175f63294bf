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

fn main() -> std::process::ExitCode {
    let cli = vigil::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
