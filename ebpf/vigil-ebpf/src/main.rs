//! Vigil's kernel programs.
//!
//! One module per probe family (process, network, file); each program is a
//! thin wrapper over a `try_*` function. Only hooks that load on kernels with
//! BPF trampolines blocked are used: tracepoints, raw tracepoints and cgroup
//! programs (see `docs/architecture.md`).
#![no_std]
#![no_main]
// `atomic_xadd`: the repeat counters are shared between CPUs.
#![feature(core_intrinsics)]
#![allow(internal_features)]
// The typed-pointer cast is one raw kfunc call instruction (`path::cast`).
#![feature(asm_experimental_arch)]
// BPF-to-BPF calls cost verifier complexity and stack; small helpers are
// inlined on purpose.
#![allow(clippy::inline_always)]
// aya's program macros fix the entry-point signatures (context by value).
#![allow(clippy::needless_pass_by_value)]

mod abi;
mod dns;
mod enforce;
mod escape;
mod file;
mod io_uring;
mod link;
mod maps;
mod network;
mod path;
mod process;
mod socket;
mod tamper;
mod task;
mod unix;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here, so it never runs.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
