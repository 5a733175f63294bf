//! Userspace decode throughput on one core: ring-buffer records laid out
//! exactly as the kernel programs write them, checked by `decode` and turned
//! into events by `to_event`, as the daemon's ring-buffer loop does before
//! enrichment.
//!
//! The mix follows a coding agent's activity: mostly file opens (absolute,
//! relative to the working directory, some failing), forks and exits, outbound
//! connects and datagram sends over IPv4 and IPv6, a few accepts, and execs
//! with realistic argument vectors.
//!
//! Prints `BENCH decode.events <N> events/s >=1000000` (details on stderr).
//!
//! Then the output stage on the decoded events: each written as a JSON line
//! in Vigil's schema (`output.json.events`) and as an OCSF record
//! (`output.ocsf.events`, conversion included), into memory, so that the
//! figures are what a format costs per event and not the disk's speed.

use std::hint::black_box;
use std::mem::size_of;
use std::time::Duration;

use vigil::sensors::decode::{Clock, decode, to_event};
use vigil_common::{
    ARGV_LEN, AcceptRecord, ConnectRecord, DIR_LEN, ExecRecord, ExitRecord, ForkRecord, Header,
    NAME_READ, OPEN_RESOLVED_FILE, OpenRecord, PATH_LEN, PathComponents, RecordKind, open_syscall,
    path_flags, sock_op,
};
use vigil_harness::stats::{Rng, rates};

const RECORDS: usize = 10_000;
const WARM_UP: Duration = Duration::from_millis(300);
const WINDOW: Duration = Duration::from_millis(400);
const WINDOWS: usize = 9;
const TARGET: f64 = 1_000_000.0;

/// The bytes of a record as the ring buffer hands them over.
fn bytes_of<T: Copy>(record: &T) -> Vec<u8> {
    // SAFETY: the records are repr(C) structs of integers and byte arrays
    // with explicit padding fields, so every byte is initialised.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(record).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

fn header(kind: RecordKind, pid: u32, comm: &str) -> Header {
    let mut c = [0u8; 16];
    let n = comm.len().min(15);
    c[..n].copy_from_slice(&comm.as_bytes()[..n]);
    Header {
        kind: kind as u16,
        flags: 0,
        verdict: 0,
        ts_ns: 5_000_000_000 + u64::from(pid) * 1_000,
        cgroup_id: 4242,
        pid,
        tgid: pid,
        ppid: 4000,
        uid: 1000,
        gid: 1000,
        _pad: 0,
        comm: c,
    }
}

fn fill<const N: usize>(text: &str) -> ([u8; N], u16) {
    let mut buf = [0u8; N];
    let n = text.len().min(N - 1);
    buf[..n].copy_from_slice(&text.as_bytes()[..n]);
    (buf, n as u16)
}

/// A directory as the kernel's dentry walk stores it: components leaf first.
fn components(dir: &str) -> PathComponents {
    let mut pc = PathComponents {
        len: 0,
        flags: path_flags::COMPLETE,
        _pad: 0,
        buf: [0; DIR_LEN + NAME_READ],
    };
    let mut at = 0;
    for part in dir.split('/').filter(|p| !p.is_empty()).rev() {
        pc.buf[at..at + part.len()].copy_from_slice(part.as_bytes());
        at += part.len() + 1;
    }
    pc.len = at as u16;
    pc
}

fn open(pid: u32, path: &str, cwd: Option<&str>, flags: i32, ret: i64) -> Vec<u8> {
    let (buf, len) = fill::<PATH_LEN>(path);
    let mut header = header(RecordKind::Open, pid, "python3");
    // As the kernel writes them: a successful open carries the file itself,
    // a failed relative one its base directory.
    let resolved = if ret >= 0 {
        header.flags |= OPEN_RESOLVED_FILE;
        let full = match cwd {
            Some(dir) if !path.starts_with('/') => format!("{dir}/{path}"),
            _ => path.to_owned(),
        };
        components(&full)
    } else {
        components(cwd.unwrap_or(""))
    };
    bytes_of(&OpenRecord {
        header,
        ret,
        flags: flags as u32,
        mode: 0o644,
        dfd: -100,
        syscall: open_syscall::OPENAT,
        _pad: 0,
        path_len: len,
        base_mnt: 0,
        base_dentry: 0,
        path_hash: 0,
        repeats: 0,
        ino: if ret >= 0 { 1_000 + u64::from(pid) } else { 0 },
        dev: if ret >= 0 { (8 << 20) | 1 } else { 0 },
        nlink: if ret >= 0 { 1 } else { u32::MAX },
        path: buf,
        resolved,
    })
}

fn exec(pid: u32, argv: &[&str]) -> Vec<u8> {
    let (filename, filename_len) = fill::<PATH_LEN>(argv[0]);
    let mut args = [0u8; ARGV_LEN];
    let mut at = 0;
    for a in argv {
        args[at..at + a.len()].copy_from_slice(a.as_bytes());
        at += a.len() + 1;
    }
    let comm = argv[0].rsplit('/').next().unwrap_or(argv[0]);
    bytes_of(&ExecRecord {
        header: header(RecordKind::Exec, pid, comm),
        old_pid: pid,
        filename_len,
        argv_len: at as u16,
        exe_nlink: 1,
        exe_dev: (8 << 20) | 1,
        exe_ino: 4321,
        filename,
        argv: args,
        exe: components(argv[0]),
    })
}

fn connect(pid: u32, addr: std::net::IpAddr, port: u16, udp: bool) -> Vec<u8> {
    let (family, bytes) = match addr {
        std::net::IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (libc::AF_INET as u16, b)
        }
        std::net::IpAddr::V6(a) => (libc::AF_INET6 as u16, a.octets()),
    };
    bytes_of(&ConnectRecord {
        header: header(RecordKind::Connect, pid, "python3"),
        family,
        port,
        protocol: if udp { 17 } else { 6 },
        op: if udp {
            sock_op::SENDMSG
        } else {
            sock_op::CONNECT
        },
        sock_type: if udp { 2 } else { 1 },
        _pad: 0,
        addr: bytes,
    })
}

fn accept(pid: u32, remote: [u8; 4], remote_port: u16) -> Vec<u8> {
    let mut local_addr = [0u8; 16];
    local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    let mut remote_addr = [0u8; 16];
    remote_addr[..4].copy_from_slice(&remote);
    bytes_of(&AcceptRecord {
        header: header(RecordKind::Accept, pid, "node"),
        family: libc::AF_INET as u16,
        local_port: 8080,
        remote_port,
        _pad: 0,
        local_addr,
        remote_addr,
    })
}

/// Records in the proportions listed in the module comment.
fn workload(rng: &mut Rng) -> (Vec<Vec<u8>>, [usize; 6]) {
    const LIBS: &[&str] = &[
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/python3.12/os.py",
        "/usr/lib/python3.12/json/__init__.py",
        "/usr/lib/python3.12/__pycache__/typing.cpython-312.pyc",
        "/etc/ld.so.cache",
        "/etc/resolv.conf",
        "/proc/self/status",
    ];
    const RELATIVE: &[&str] = &[
        "src/main.py",
        "tests/test_api.py",
        "../shared/config.yaml",
        "./build/out.o",
        "README.md",
    ];
    const COMMANDS: &[&[&str]] = &[
        &["/usr/bin/git", "status", "--porcelain=v2"],
        &[
            "/usr/bin/git",
            "log",
            "-n",
            "20",
            "--format=%H %s",
            "origin/main",
        ],
        &[
            "/usr/bin/python3.12",
            "-m",
            "pytest",
            "-q",
            "-x",
            "tests/test_api.py::test_login",
            "--maxfail=1",
        ],
        &["/bin/sh", "-c", "grep -rn 'TODO' src | head -50"],
        &["/usr/bin/grep", "-rn", "TODO", "src"],
    ];
    let mut counts = [0usize; 6];
    let records = (0..RECORDS)
        .map(|_| {
            let pid = 5000 + rng.below(200) as u32;
            let n = rng.below(1000);
            let roll = rng.below(100);
            let (slot, bytes) = match roll {
                0..=29 => (0, open(pid, rng.pick(LIBS), None, libc::O_RDONLY, 3)),
                30..=44 => (
                    0,
                    open(
                        pid,
                        rng.pick(RELATIVE),
                        Some("/srv/workspace/project"),
                        libc::O_RDONLY,
                        4,
                    ),
                ),
                45..=49 => (
                    0,
                    open(
                        pid,
                        &format!("/srv/workspace/project/out/{n}.txt"),
                        None,
                        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                        5,
                    ),
                ),
                50..=54 => (
                    0,
                    open(
                        pid,
                        &format!("/usr/lib/python3.12/site-packages/mod{n}.py"),
                        None,
                        libc::O_RDONLY,
                        -i64::from(libc::ENOENT),
                    ),
                ),
                55..=66 => (
                    1,
                    bytes_of(&ForkRecord {
                        header: header(RecordKind::Fork, pid, "python3"),
                        child_pid: pid + 1,
                        child_tgid: pid + 1,
                    }),
                ),
                67..=78 => (
                    2,
                    bytes_of(&ExitRecord {
                        header: header(RecordKind::Exit, pid, "git"),
                        exit_code: if n.is_multiple_of(10) { 1 << 8 } else { 0 },
                        _pad: 0,
                    }),
                ),
                79..=85 => (
                    3,
                    connect(
                        pid,
                        format!("10.0.3.{}", n % 250).parse().unwrap(),
                        443,
                        false,
                    ),
                ),
                86..=88 => (
                    3,
                    connect(pid, format!("fd00::{n:x}").parse().unwrap(), 8443, false),
                ),
                89..=90 => (3, connect(pid, "127.0.0.53".parse().unwrap(), 53, true)),
                91..=93 => (
                    4,
                    accept(pid, [10, 1, 2, (n % 250) as u8], 40_000 + n as u16),
                ),
                _ => (5, exec(pid, COMMANDS[rng.below(COMMANDS.len())])),
            };
            counts[slot] += 1;
            bytes
        })
        .collect();
    (records, counts)
}

/// Decodes every record once; returns how many decoded.
fn pass(records: &[Vec<u8>], clock: &Clock) -> usize {
    let mut decoded = 0;
    for bytes in records {
        if let Ok(record) = decode(black_box(bytes)) {
            black_box(to_event(&record, clock));
            decoded += 1;
        }
    }
    decoded
}

fn main() {
    let (records, counts) = workload(&mut Rng(0x5EED_DEC0_DE00_0001));
    let clock = Clock::now();
    let decoded = pass(&records, &clock);
    assert_eq!(decoded, records.len(), "every bench record must decode");
    let bytes: usize = records.iter().map(Vec::len).sum();

    let rates = rates(WARM_UP, WINDOW, WINDOWS, || pass(&records, &clock));
    let median = rates.median();
    eprintln!(
        "decode bench: {} records ({} opens, {} forks, {} exits, {} connects, {} accepts, {} execs; \
         {:.0} bytes each on average); {WINDOWS} windows of {WINDOW:?}: min {:.0}, median {median:.0}, \
         max {:.0} events/s ({:.0} ns each)",
        records.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
        counts[5],
        bytes as f64 / records.len() as f64,
        rates.min(),
        rates.max(),
        1e9 / median,
    );
    println!("BENCH decode.events {median:.0} events/s >={TARGET:.0}");

    let events: Vec<vigil::event::Event> = records
        .iter()
        .filter_map(|b| decode(b).ok())
        .map(|r| to_event(&r, &clock))
        .collect();
    let json = output_rate(&events, |e, out| serde_json::to_writer(out, e));
    let ocsf = output_rate(&events, |e, out| {
        serde_json::to_writer(out, &vigil::ocsf::to_ocsf(e, "node-1"))
    });
    eprintln!(
        "output bench: {} events; JSON {json:.0} events/s ({:.0} ns each), OCSF {ocsf:.0} events/s ({:.0} ns each)",
        events.len(),
        1e9 / json,
        1e9 / ocsf,
    );
    println!("BENCH output.json.events {json:.0} events/s -");
    println!("BENCH output.ocsf.events {ocsf:.0} events/s >={OUTPUT_TARGET:.0}");

    let export = export_rate(&events);
    eprintln!(
        "export bench: journaled event to an encoded OTLP request with an OCSF body: {export:.0} events/s ({:.0} ns each)",
        1e9 / export
    );
    println!("BENCH output.otlp_ocsf.events {export:.0} events/s -");
}

/// Median events/s of an `[[export]]` sink's work per event, from the
/// journal's bytes: decode, convert, the OCSF body, the log record, and
/// its share of encoding a request of 1,024 records.
fn export_rate(events: &[vigil::event::Event]) -> f64 {
    use vigil::config::ExportFormat;
    use vigil::export::otlp;
    let journaled: Vec<vigil::journal::Encoded> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut wire = vigil::wire::pb::Event::from(e);
            wire.sequence = i as u64 + 1;
            vigil::journal::Encoded::encode(&wire).expect("encode")
        })
        .collect();
    let observed = std::time::SystemTime::now();
    let round = || {
        for chunk in journaled.chunks(1024) {
            let records = chunk
                .iter()
                .map(|e| otlp::journaled(black_box(e), "node-1", ExportFormat::Ocsf, observed))
                .collect::<Result<Vec<_>, _>>()
                .expect("convert");
            black_box(otlp::EncodedRequest::new(&otlp::request("node-1", records)));
        }
        journaled.len()
    };
    rates(WARM_UP, WINDOW, WINDOWS, round).median()
}

/// The OCSF line must cost well under the e2e budget of 10 µs an event.
const OUTPUT_TARGET: f64 = 500_000.0;

/// Median events/s of writing every event as one line with `write`.
fn output_rate(
    events: &[vigil::event::Event],
    write: impl Fn(&vigil::event::Event, &mut Vec<u8>) -> serde_json::Result<()>,
) -> f64 {
    let mut buf = Vec::with_capacity(1 << 20);
    let round = |buf: &mut Vec<u8>| {
        for e in events {
            buf.clear();
            write(black_box(e), buf).expect("serialize");
            buf.push(b'\n');
            black_box(&buf);
        }
        events.len()
    };
    rates(WARM_UP, WINDOW, WINDOWS, || round(&mut buf)).median()
}
