//! Batched hash-map access (`BPF_MAP_LOOKUP_BATCH`, `BPF_MAP_DELETE_BATCH`),
//! which aya does not offer. Reading a whole map in a few system calls costs
//! far less than one call per key once there are more than a few dozen keys
//! to look at: each call is a kernel entry and exit, a microsecond or more
//! in a VM.

use std::os::fd::{AsRawFd as _, BorrowedFd};

/// `enum bpf_cmd` values (`include/uapi/linux/bpf.h`).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// Entries asked for per lookup call: more than any hash bucket holds, so
/// the kernel never answers `ENOSPC` for a bucket that does not fit.
const CHUNK: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("batched map lookup failed: {0}")]
    Lookup(#[source] std::io::Error),
    #[error("batched map delete failed: {0}")]
    Delete(#[source] std::io::Error),
}

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> Result<(), std::io::Error> {
    // SAFETY: `attr` is a valid `bpf_attr` prefix of the size passed; the
    // buffers it points to are live and as large as `count` entries.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Every entry of the hash map `fd` (keys `K`, values `V`, both plain data
/// of the map's key and value sizes).
pub fn lookup_all<K: Copy + Default, V: Copy + Default>(
    fd: BorrowedFd<'_>,
) -> Result<Vec<(K, V)>, BatchError> {
    let mut keys = vec![K::default(); CHUNK];
    let mut values = vec![V::default(); CHUNK];
    let mut out = Vec::new();
    // The kernel's cursor for a hash map is a bucket index.
    let (mut cursor, mut next) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                std::ptr::from_mut(&mut cursor) as u64
            },
            out_batch: std::ptr::from_mut(&mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let done = match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
            Ok(()) => false,
            // The last entries come with ENOENT.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) => return Err(BatchError::Lookup(e)),
        };
        let got = (attr.count as usize).min(CHUNK);
        out.extend(
            keys[..got]
                .iter()
                .copied()
                .zip(values[..got].iter().copied()),
        );
        if done {
            return Ok(out);
        }
        cursor = next;
        first = false;
    }
}

/// Deletes `keys` from the hash map `fd`, skipping keys it does not hold.
pub fn delete<K: Copy>(fd: BorrowedFd<'_>, keys: &[K]) -> Result<(), BatchError> {
    let mut rest = keys;
    while !rest.is_empty() {
        let mut attr = BatchAttr {
            keys: rest.as_ptr() as u64,
            count: u32::try_from(rest.len()).unwrap_or(u32::MAX),
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // The kernel stops at the first key it cannot delete and says how
        // many it did.
        let result = bpf(BPF_MAP_DELETE_BATCH, &mut attr);
        let done = (attr.count as usize).min(rest.len());
        match result {
            Ok(()) => rest = &rest[done..],
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                rest = rest.get(done + 1..).unwrap_or_default();
            }
            Err(e) => return Err(BatchError::Delete(e)),
        }
    }
    Ok(())
}
