//! Writes the seed corpora: `seeds OUT_DIR` fills `OUT_DIR/<target>/`.
//!
//! Seeds are real inputs, so the fuzzer starts from the shapes the parsers
//! meet in production: ring-buffer records laid out from the vigil-common
//! structs the kernel programs write, DNS packets as resolvers send them,
//! the repository's configs (deploy/ and every TOML example in docs/), and
//! requests and events encoded by prost.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use prost::Message as _;
use vigil::wire::pb;
use vigil_common::{
    ARGV_LEN, AcceptRecord, ConnectRecord, DIR_LEN, DNS_LEN, DnsRecord, EscapeRecord, ExecRecord,
    ExitRecord, ForkRecord, Header, IoUringRecord, LinkRecord, NAME_READ, OPEN_RESOLVED_FILE,
    OpenRecord, PATH_LEN, PathComponents, RecordKind, SocketRecord, TamperRecord, UnixRecord,
    open_syscall, path_flags, sock_op, tamper,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: seeds OUT_DIR"));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    write(&out, "ring_record", &records());
    write(&out, "dns_response", &[response(), response_aaaa()]);
    write(
        &out,
        "dns_query",
        &[query("api.github.com", 1), query("example.org", 28)],
    );
    write(&out, "config", &configs(&repo));
    write(&out, "subscribe_request", &requests());
    write(&out, "governance_request", &governance());
    write(&out, "wire_event", &events());
}

fn write(out: &Path, target: &str, seeds: &[Vec<u8>]) {
    let dir = out.join(target);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    for (i, seed) in seeds.iter().enumerate() {
        let file = dir.join(format!("seed-{i:03}"));
        fs::write(&file, seed).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
    }
    println!("{target}: {} seeds in {}", seeds.len(), dir.display());
}

/// The bytes of a record as the ring buffer hands them over.
fn bytes_of<T: Copy>(record: &T) -> Vec<u8> {
    // SAFETY: the records are repr(C) structs of integers and byte arrays
    // with explicit padding fields, so every byte is initialised.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(record).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

/// A record of kind `T` with every field zero but the header's.
fn zeroed<T: Copy>(header: Header) -> Vec<u8> {
    // SAFETY: every record is repr(C), valid for any bit pattern (zeros
    // included), and starts with its header.
    let record: T = unsafe {
        let mut r: T = std::mem::zeroed();
        std::ptr::from_mut(&mut r).cast::<Header>().write(header);
        r
    };
    bytes_of(&record)
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

fn addr16(a: &str) -> (u16, [u8; 16]) {
    match a.parse::<IpAddr>().expect("an address") {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (AF_INET, b)
        }
        IpAddr::V6(a) => (AF_INET6, a.octets()),
    }
}

fn exec() -> Vec<u8> {
    let words = [
        "/usr/bin/git",
        "clone",
        "--depth",
        "1",
        "https://example.org/r.git",
    ];
    let (filename, filename_len) = fill::<PATH_LEN>(words[0]);
    let mut args = [0u8; ARGV_LEN];
    let mut at = 0;
    for a in words {
        args[at..at + a.len()].copy_from_slice(a.as_bytes());
        at += a.len() + 1;
    }
    bytes_of(&ExecRecord {
        header: header(RecordKind::Exec, 4100, "git"),
        old_pid: 4100,
        filename_len,
        argv_len: at as u16,
        exe_nlink: 1,
        exe_dev: (8 << 20) | 1,
        exe_ino: 4321,
        filename,
        argv: args,
        exe: components(words[0]),
    })
}

fn open(path: &str, cwd: Option<&str>, ret: i64) -> Vec<u8> {
    let (buf, len) = fill::<PATH_LEN>(path);
    let mut h = header(RecordKind::Open, 4104, "python3");
    let resolved = if ret >= 0 {
        h.flags |= OPEN_RESOLVED_FILE;
        components(&cwd.map_or_else(|| path.to_owned(), |d| format!("{d}/{path}")))
    } else {
        components(cwd.unwrap_or(""))
    };
    let full = bytes_of(&OpenRecord {
        header: h,
        ret,
        flags: 0,
        mode: 0o644,
        dfd: -100,
        syscall: open_syscall::OPENAT,
        _pad: 0,
        path_len: len,
        base_mnt: 0,
        base_dentry: 0,
        path_hash: 0,
        repeats: 0,
        ino: 1_000,
        dev: (8 << 20) | 1,
        nlink: 1,
        path: buf,
        resolved,
    });
    // The kernel sends the resolved text only as far as it goes.
    let fixed = std::mem::offset_of!(OpenRecord, resolved) + 8;
    full[..fixed + usize::from(resolved.len)].to_vec()
}

fn dns_record() -> Vec<u8> {
    let (family, src_addr) = addr16("10.0.0.7");
    let (_, dst_addr) = addr16("10.0.0.53");
    let packet = query("api.github.com", 1);
    let mut payload = [0u8; DNS_LEN];
    payload[..packet.len()].copy_from_slice(&packet);
    bytes_of(&DnsRecord {
        header: header(RecordKind::Dns, 4105, "curl"),
        family,
        len: packet.len() as u16,
        src_port: 40000,
        dst_port: 53,
        src_addr,
        dst_addr,
        payload,
    })
}

fn records() -> Vec<Vec<u8>> {
    let mut out = vec![
        exec(),
        bytes_of(&ForkRecord {
            header: header(RecordKind::Fork, 4100, "bash"),
            child_pid: 4101,
            child_tgid: 4101,
        }),
        bytes_of(&ExitRecord {
            header: header(RecordKind::Exit, 4101, "bash"),
            exit_code: 1 << 8,
            _pad: 0,
        }),
    ];
    for (addr, port, udp) in [("140.82.112.3", 443, false), ("2606:4700::1111", 53, true)] {
        let (family, addr) = addr16(addr);
        out.push(bytes_of(&ConnectRecord {
            header: header(RecordKind::Connect, 4102, "python3"),
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
            addr,
        }));
    }
    let (family, local_addr) = addr16("127.0.0.1");
    let (_, remote_addr) = addr16("10.0.0.7");
    out.push(bytes_of(&AcceptRecord {
        header: header(RecordKind::Accept, 4103, "node"),
        family,
        local_port: 8080,
        remote_port: 51234,
        _pad: 0,
        local_addr,
        remote_addr,
    }));
    out.push(open("/etc/resolv.conf", None, 3));
    out.push(open("src/main.py", Some("/home/agent/work"), 4));
    out.push(open("missing.txt", Some("/tmp"), -2));
    out.push(dns_record());
    out.push(zeroed::<IoUringRecord>(header(
        RecordKind::IoUring,
        4106,
        "uring",
    )));
    out.push(zeroed::<LinkRecord>(header(RecordKind::Link, 4107, "ln")));
    out.push(zeroed::<SocketRecord>(header(
        RecordKind::Socket,
        4108,
        "nc",
    )));
    out.push(zeroed::<UnixRecord>(header(
        RecordKind::Unix,
        4109,
        "docker",
    )));
    out.push(zeroed::<EscapeRecord>(header(
        RecordKind::Escape,
        4110,
        "sh",
    )));
    out.push(bytes_of(&TamperRecord {
        header: header(RecordKind::Tamper, 4111, "gdb"),
        method: tamper::PTRACE,
        _pad: 0,
        arg: 0x4206,
        target_tid: 812,
        _pad2: 0,
    }));
    out
}

fn name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn query(qname: &str, qtype: u16) -> Vec<u8> {
    let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    name(&mut p, qname);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    p
}

/// A CNAME and two A records, the answer names compressed.
fn response() -> Vec<u8> {
    let mut p = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0];
    name(&mut p, "www.example.org");
    p.extend_from_slice(&[0, 1, 0, 1]);
    // www.example.org CNAME example.org (a pointer to offset 16)
    p.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0x0e, 0x10, 0, 2, 0xc0, 16]);
    for last in [34, 35] {
        p.extend_from_slice(&[
            0xc0, 16, 0, 1, 0, 1, 0, 0, 0x01, 0x2c, 0, 4, 93, 184, 216, last,
        ]);
    }
    p
}

fn response_aaaa() -> Vec<u8> {
    let mut p = vec![0xab, 0xcd, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
    name(&mut p, "example.org");
    p.extend_from_slice(&[0, 28, 0, 1]);
    p.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1, 0, 0, 0x01, 0x2c, 0, 16]);
    let (_, addr) = addr16("2606:2800:220:1:248:1893:25c8:1946");
    p.extend_from_slice(&addr);
    p
}

/// `deploy/config/*.toml` and every TOML code block of `docs/*.md`.
fn configs(repo: &Path) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    for dir in ["deploy/config", "docs"] {
        let dir = repo.join(dir);
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        files.extend(entries.map(|e| e.expect("a directory entry").path()));
    }
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        match file.extension().and_then(|e| e.to_str()) {
            Some("toml") => out.push(text.into_bytes()),
            Some("md") => {
                let mut block: Option<String> = None;
                for line in text.lines() {
                    match (block.as_mut(), line.trim_start()) {
                        (None, "```toml") => block = Some(String::new()),
                        (Some(_), "```") => out.extend(block.take().map(String::into_bytes)),
                        (Some(b), _) => {
                            b.push_str(line);
                            b.push('\n');
                        }
                        (None, _) => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn requests() -> Vec<Vec<u8>> {
    use pb::subscribe_request::Start;
    let filter = pb::EventFilter {
        agents: vec!["coder".into(), "reviewer".into()],
        sessions: vec!["s-1".into()],
        kinds: vec![pb::EventKind::Exec as i32, pb::EventKind::Anomaly as i32],
        min_severity: pb::Severity::High as i32,
        anomalies_only: false,
    };
    [
        (Some(Start::AfterSequence(42)), Some(filter.clone())),
        (Some(Start::Oldest(true)), None),
        (Some(Start::Now(true)), Some(pb::EventFilter::default())),
        (None, Some(filter)),
    ]
    .into_iter()
    .map(|(start, filter)| pb::SubscribeRequest { start, filter }.encode_to_vec())
    .collect()
}

/// Each governance request as `vigil` sends it, behind the byte that picks
/// its type in the target: revocations of an agent and of a session, a
/// restore, approvals with and without a narrower scope, the end of a task,
/// and sessions with and without a chosen name.
fn governance() -> Vec<Vec<u8>> {
    let tagged = |tag: u8, body: Vec<u8>| [vec![tag], body].concat();
    let ttl = Some(prost_types::Duration {
        seconds: 900,
        nanos: 0,
    });
    vec![
        tagged(
            0,
            pb::RevokeRequest {
                agent: "coder".into(),
                session: String::new(),
                reason: "exfiltration suspected".into(),
            }
            .encode_to_vec(),
        ),
        tagged(
            0,
            pb::RevokeRequest {
                agent: "coder".into(),
                session: "s-1".into(),
                reason: "ticket SEC-42".into(),
            }
            .encode_to_vec(),
        ),
        tagged(
            1,
            pb::RestoreRequest {
                agent: "coder".into(),
                session: String::new(),
                reason: "reviewed".into(),
            }
            .encode_to_vec(),
        ),
        tagged(
            2,
            pb::ApproveTaskRequest {
                agent: "coder".into(),
                task: "T-1".into(),
                purpose: "fix the build".into(),
                ttl,
                scope: None,
            }
            .encode_to_vec(),
        ),
        tagged(
            2,
            pb::ApproveTaskRequest {
                agent: "coder".into(),
                task: "T-2".into(),
                purpose: "release notes".into(),
                ttl,
                scope: Some(pb::TaskScope {
                    systems: vec!["api.example.com:443".into()],
                    tools: vec!["/usr/bin/git".into()],
                    data: vec!["workspace".into()],
                }),
            }
            .encode_to_vec(),
        ),
        tagged(
            3,
            pb::EndTaskRequest {
                agent: "coder".into(),
                task: "T-1".into(),
            }
            .encode_to_vec(),
        ),
        tagged(
            4,
            pb::StartSessionRequest {
                agent: "coder".into(),
                session: "s-7".into(),
                pid: 4242,
            }
            .encode_to_vec(),
        ),
        tagged(
            4,
            pb::StartSessionRequest {
                agent: "reviewer".into(),
                session: String::new(),
                pid: 1,
            }
            .encode_to_vec(),
        ),
    ]
}

fn events() -> Vec<Vec<u8>> {
    use vigil::event::{Event, Exit, Identity, Loss, Payload};
    use vigil::sensors::decode::{Clock, decode, to_event};
    let identity = Identity {
        agent: Some("coder".into()),
        session: Some("s-1".into()),
        cgroup: Some("/vigil/coder/s-1".into()),
        cgroup_id: 4242,
        ..Identity::default()
    };
    let mut exit = Event::daemon(
        identity.clone(),
        Payload::Exit(Exit {
            code: Some(0),
            signal: None,
        }),
    );
    exit.seq = 7;
    let loss = Event::daemon(
        identity,
        Payload::Loss(Loss {
            sensor: "file".into(),
            lost: 3,
            total: 10,
        }),
    );
    let mut out: Vec<Vec<u8>> = [exit, loss]
        .iter()
        .map(|e| pb::Event::from(e).encode_to_vec())
        .collect();
    // Every seed record as the journal stores its event.
    let clock = Clock::now();
    for bytes in records() {
        if let Ok(record) = decode(&bytes) {
            out.push(pb::Event::from(&to_event(&record, &clock)).encode_to_vec());
        }
    }
    out
}
