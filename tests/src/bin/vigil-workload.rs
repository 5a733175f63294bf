//! Workloads for the integration tests: small, exact actions the tests run
//! inside (or outside) agent sessions and then look for in the event stream.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream, UdpSocket},
    process::{Command, ExitCode},
};

/// Resolves `name` (A record) at `server` with a hand-made query, as a
/// resolver library would, then connects to the first address on `port`.
fn dns_connect(server: &str, name: &str, port: &str) -> std::io::Result<()> {
    let ip = resolve(server, name)?;
    println!("{ip}");
    TcpStream::connect((ip, port.parse::<u16>().expect("port"))).map(|_| ())
}

/// An A query for `name` with message id `id`.
fn query(name: &str, id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The answer to `query` that a server would send: the question echoed,
/// then one A record for `addr` (TTL 300).
fn answer_to(query: &[u8], addr: std::net::Ipv4Addr) -> Vec<u8> {
    let mut r = query.to_vec();
    r[2] = 0x81;
    r[3] = 0x80;
    r[6] = 0;
    r[7] = 1;
    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4]);
    r.extend_from_slice(&addr.octets());
    r
}

/// Sends an A query for `name` to `server` and returns the first address.
fn resolve(server: &str, name: &str) -> std::io::Result<std::net::Ipv4Addr> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let q = query(name, 0x1234);
    sock.send_to(&q, server)?;
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf)?;
    // The answer follows the echoed question: name pointer, type, class,
    // ttl, rdlength, then the 4-byte address.
    let at = q.len() + 2 + 2 + 2 + 4 + 2;
    if n < at + 4 {
        return Err(std::io::Error::other("short DNS answer"));
    }
    Ok(std::net::Ipv4Addr::new(
        buf[at],
        buf[at + 1],
        buf[at + 2],
        buf[at + 3],
    ))
}

/// Plays resolver for itself: binds `server` (an address with port 53), asks
/// it for `name` from a socket on `client_ip` and answers with `addr`, then
/// reads the answer on the asking socket. When the query cannot be sent
/// (enforcement refuses the server), the answer goes out unasked. Answers
/// `asked` or `unasked`.
fn forge(server: &str, client_ip: &str, name: &str, addr: &str) -> std::io::Result<String> {
    let addr: std::net::Ipv4Addr = addr.parse().map_err(std::io::Error::other)?;
    let srv = UdpSocket::bind(server)?;
    let client = UdpSocket::bind((client_ip, 0))?;
    for s in [&srv, &client] {
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    }
    let q = query(name, 0x4242);
    let mut buf = [0u8; 512];
    let (q, peer, how) = if client.send_to(&q, server).is_ok() {
        let (n, peer) = srv.recv_from(&mut buf)?;
        (buf[..n].to_vec(), peer, "asked")
    } else {
        (q, client.local_addr()?, "unasked")
    };
    srv.send_to(&answer_to(&q, addr), peer)?;
    client.recv_from(&mut buf)?;
    Ok(how.to_owned())
}

/// Performs actions read from stdin, one per line, and answers each on
/// stdout, so a test can act inside a session at chosen moments (before and
/// after a revocation): `connect ADDR`, `udp ADDR`, `open PATH`,
/// `open-many PREFIX N`, `exec PATH [ARGS]`, `dns SERVER NAME`,
/// `forge SERVER CLIENT_IP NAME ADDR`, `udp-bind ADDR`, `udp-recv`.
fn serve() -> std::io::Result<()> {
    use std::io::BufRead as _;
    use std::os::unix::process::ExitStatusExt as _;
    let mut out = std::io::stdout();
    // The socket of `udp-bind`, read by `udp-recv`.
    let mut bound: Option<UdpSocket> = None;
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["connect", addr] => result(TcpStream::connect(addr).map(|_| ())),
            ["udp", addr] => result(
                UdpSocket::bind(if addr.starts_with('[') {
                    "[::1]:0"
                } else {
                    "127.0.0.1:0"
                })
                .and_then(|s| s.send_to(b"vigil", addr).map(|_| ())),
            ),
            ["open", path] => result(std::fs::File::open(path).map(|_| ())),
            // New names for a file: link(2), symlink(2), rename(2).
            ["hardlink", old, new] => result(std::fs::hard_link(old, new)),
            ["symlink", target, new] => result(std::os::unix::fs::symlink(target, new)),
            ["rename", old, new] => result(std::fs::rename(old, new)),
            // Opens PREFIX0 .. PREFIX{N-1}: as many distinct opens, whatever
            // their result; answers how many succeeded.
            ["open-many", prefix, n] => {
                let n: u64 = n.parse().expect("count");
                let opened = (0..n)
                    .filter(|i| std::fs::File::open(format!("{prefix}{i}")).is_ok())
                    .count();
                format!("ok {opened}")
            }
            // The child's output must not mix with the answers on stdout; it
            // goes to stderr (a dup, not an open, which a revocation kills).
            ["exec", prog, args @ ..] => match Command::new(prog)
                .args(args)
                .stdout(std::process::Stdio::from(std::io::stderr()))
                .status()
            {
                Ok(s) => match (s.code(), s.signal()) {
                    (Some(c), _) => format!("exit {c}"),
                    (None, Some(sig)) => format!("signal {sig}"),
                    _ => "exit ?".to_owned(),
                },
                Err(e) => format!("err {}", e.raw_os_error().unwrap_or(0)),
            },
            ["dns", server, name] => match resolve(server, name) {
                Ok(ip) => format!("ok {ip}"),
                Err(e) => format!("err {}", e.raw_os_error().unwrap_or(0)),
            },
            ["forge", server, client_ip, name, addr] => {
                match forge(server, client_ip, name, addr) {
                    Ok(how) => format!("ok {how}"),
                    Err(e) => format!("err {}", e.raw_os_error().unwrap_or(0)),
                }
            }
            // Binds a UDP socket and answers its port.
            ["udp-bind", addr] => match UdpSocket::bind(addr) {
                Ok(s) => {
                    let port = s.local_addr()?.port();
                    bound = Some(s);
                    format!("ok {port}")
                }
                Err(e) => format!("err {}", e.raw_os_error().unwrap_or(0)),
            },
            // Waits up to 5 s for a datagram on the `udp-bind` socket.
            ["udp-recv"] => match bound.as_ref().map(|s| {
                s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
                s.recv_from(&mut [0u8; 512])
            }) {
                Some(Ok((n, _))) => format!("ok {n}"),
                Some(Err(e)) => format!("err {}", e.raw_os_error().unwrap_or(0)),
                None => "err usage".to_owned(),
            },
            _ => "err usage".to_owned(),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}

fn cstring(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).expect("no NUL in argument")
}

fn check(ret: libc::c_int, what: &str) -> std::io::Result<libc::c_int> {
    if ret < 0 {
        let e = std::io::Error::last_os_error();
        Err(std::io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(ret)
    }
}

/// Opens `name` relative to a descriptor of `dir`, then at once makes that
/// descriptor number name `decoy` (`dup2`) and stays alive a while: whoever
/// resolves the descriptor after the open, rather than at it, names the
/// wrong directory.
fn openat_swap(dir: &str, name: &str, decoy: &str) -> std::io::Result<()> {
    // SAFETY: plain syscalls on C strings that outlive them.
    unsafe {
        let d = check(
            libc::open(cstring(dir).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY),
            "open dir",
        )?;
        let f = check(
            libc::openat(d, cstring(name).as_ptr(), libc::O_RDONLY),
            "openat",
        )?;
        let other = check(
            libc::open(cstring(decoy).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY),
            "open decoy",
        )?;
        check(libc::dup2(other, d), "dup2")?;
        println!("{f}");
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    Ok(())
}

/// Runs `prog` through `execveat(fd, "", AT_EMPTY_PATH)`: from a descriptor
/// of the file itself, or (`memfd`) of an anonymous in-memory copy of it.
/// The kernel then names the program `/dev/fd/N`, which means something
/// only in this process.
/// Makes one call that reaches for another process (or the kernel's BPF
/// objects) and prints its result (`ok N` or `err ERRNO`): the tests tell
/// a refused call from one the caller did not live to see return.
fn reach(what: &str, call: impl FnOnce() -> i64) -> std::io::Result<()> {
    let r = call();
    if r < 0 {
        let e = std::io::Error::last_os_error();
        println!("err {}", e.raw_os_error().unwrap_or(0));
        return Err(std::io::Error::other(format!("{what}: {e}")));
    }
    println!("ok {r}");
    std::io::stdout().flush()
}

/// Reads 8 bytes of `pid`'s memory at the address of its auxiliary vector
/// (always mapped), with `process_vm_readv`.
fn vm_read(pid: &str) -> i64 {
    let auxv = std::fs::read(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Field 28 of stat is the start of the stack: always mapped.
    let text = String::from_utf8_lossy(&auxv);
    let after = text.rsplit_once(')').map_or("", |(_, r)| r);
    let addr: usize = after
        .split_whitespace()
        .nth(25)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut buf = [0u8; 8];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr.saturating_sub(8) as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: one local iovec over our buffer; the kernel checks the remote one.
    unsafe {
        libc::process_vm_readv(
            pid.parse().expect("pid"),
            &raw const local,
            1,
            &raw const remote,
            1,
            0,
        ) as i64
    }
}

/// `bpf(BPF_OBJ_GET)` of a pinned object: the descriptor through which a
/// pinned map's entries could be rewritten.
fn bpf_obj_get(path: &str) -> i64 {
    const BPF_OBJ_GET: libc::c_long = 7;
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    let c = cstring(path);
    let attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: bpf(2) with an attribute block of the size given.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &raw const attr,
            size_of::<ObjAttr>() as u32,
        )
    }
}

fn exec_from_fd(prog: &str, args: &[&str], memfd: bool) -> std::io::Result<()> {
    let fd = if memfd {
        let bytes = std::fs::read(prog)?;
        // SAFETY: memfd_create with a C string; the descriptor is ours.
        let fd = check(
            unsafe { libc::memfd_create(cstring("vigil-payload").as_ptr(), 0) },
            "memfd_create",
        )?;
        // SAFETY: we own the new descriptor and hand it to File.
        let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        file.write_all(&bytes)?;
        std::os::fd::IntoRawFd::into_raw_fd(file)
    } else {
        // SAFETY: open with a C string.
        check(
            unsafe { libc::open(cstring(prog).as_ptr(), libc::O_RDONLY) },
            "open",
        )?
    };
    let argv: Vec<std::ffi::CString> = std::iter::once(prog)
        .chain(args.iter().copied())
        .map(cstring)
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let empty = cstring("");
    // SAFETY: NUL-terminated argument and environment arrays of live C
    // strings; on success this process image is replaced.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd,
            empty.as_ptr(),
            ptrs.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    Err(std::io::Error::last_os_error())
}

/// Opens and reads `path` through io_uring (`IORING_OP_OPENAT`, then
/// `IORING_OP_READ`) and prints what it read: no `open` syscall is made.
fn uring_read(path: &str) -> std::io::Result<()> {
    use io_uring::{IoUring, opcode, types};
    fn complete(ring: &mut IoUring, entry: &io_uring::squeue::Entry) -> std::io::Result<i32> {
        // SAFETY: the entry's buffers (path, read buffer) outlive the wait below.
        unsafe { ring.submission().push(entry) }
            .map_err(|_| std::io::Error::other("submission queue full"))?;
        ring.submit_and_wait(1)?;
        let cqe = ring
            .completion()
            .next()
            .ok_or_else(|| std::io::Error::other("no completion"))?;
        if cqe.result() < 0 {
            return Err(std::io::Error::from_raw_os_error(-cqe.result()));
        }
        Ok(cqe.result())
    }
    let mut ring = IoUring::new(8)?;
    let name = cstring(path);
    let open = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), name.as_ptr())
        .flags(libc::O_RDONLY)
        .build();
    let fd = complete(&mut ring, &open)?;
    let mut buf = vec![0u8; 4096];
    let read = opcode::Read::new(types::Fd(fd), buf.as_mut_ptr(), buf.len() as u32).build();
    let n = complete(&mut ring, &read)?;
    std::io::stdout().write_all(&buf[..n as usize])?;
    Ok(())
}

/// Creates a socket of `family`, `ty` and `protocol` (numbers, as
/// `socket(2)` takes them), prints `ok` or `err ERRNO` and closes it.
fn socket(family: &str, ty: &str, protocol: &str) -> std::io::Result<()> {
    let n = |s: &str| s.parse::<i32>().expect("socket(2) argument");
    // SAFETY: plain syscall; the descriptor is closed below.
    let fd = unsafe { libc::socket(n(family), n(ty), n(protocol)) };
    let r = if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        Ok(())
    };
    match &r {
        Ok(()) => println!("ok"),
        Err(e) => println!("err {}", e.raw_os_error().unwrap_or(0)),
    }
    r
}

/// Resolves `name` as programs do through glibc: `getaddrinfo` with
/// `AI_ADDRCONFIG` (which asks the kernel for the interfaces' addresses
/// over `NETLINK_ROUTE`), then lists the interfaces (`if_nameindex`, over
/// netlink too). Prints each address and the interface count.
fn resolve_glibc(name: &str) -> std::io::Result<()> {
    let host = cstring(name);
    // SAFETY: zeroed addrinfo is a valid "no hints" value.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_ADDRCONFIG;
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: valid C strings and out pointer; the list is freed below.
    let rc = unsafe {
        libc::getaddrinfo(
            host.as_ptr(),
            std::ptr::null(),
            &raw const hints,
            &raw mut res,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::other(format!("getaddrinfo: {rc}")));
    }
    let mut at = res;
    while !at.is_null() {
        // SAFETY: a node of the list getaddrinfo returned.
        let ai = unsafe { &*at };
        let addr = match ai.ai_family {
            // SAFETY: the family says which sockaddr it is.
            libc::AF_INET => unsafe {
                let sa = ai.ai_addr.cast::<libc::sockaddr_in>().read_unaligned();
                std::net::IpAddr::from(u32::from_be(sa.sin_addr.s_addr).to_be_bytes())
            },
            // SAFETY: as above.
            libc::AF_INET6 => unsafe {
                let sa = ai.ai_addr.cast::<libc::sockaddr_in6>().read_unaligned();
                std::net::IpAddr::from(sa.sin6_addr.s6_addr)
            },
            _ => {
                at = ai.ai_next;
                continue;
            }
        };
        println!("{addr}");
        at = ai.ai_next;
    }
    // SAFETY: the list getaddrinfo returned, freed once.
    unsafe { libc::freeaddrinfo(res) };
    // SAFETY: the array is freed below; it ends with a zero index.
    let ifs = unsafe { libc::if_nameindex() };
    if ifs.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    let mut count = 0;
    // SAFETY: walking the array up to its terminator.
    while unsafe { (*ifs.add(count)).if_index } != 0 {
        count += 1;
    }
    // SAFETY: the array if_nameindex returned.
    unsafe { libc::if_freenameindex(ifs) };
    println!("interfaces {count}");
    Ok(())
}

/// A unix socket address: a path, or `@NAME` for an abstract one.
fn unix_addr(address: &str) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt as _;
    match address.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name),
        None => std::os::unix::net::SocketAddr::from_pathname(address),
    }
}

/// Connects a stream socket to the unix socket `address` (`stream`), or
/// sends one datagram to it (`dgram`); prints `ok` or `err ERRNO`.
fn unix(kind: &str, address: &str) -> std::io::Result<()> {
    let addr = unix_addr(address)?;
    let r = match kind {
        "stream" => std::os::unix::net::UnixStream::connect_addr(&addr).map(drop),
        _ => std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.send_to_addr(b"vigil", &addr).map(drop)),
    };
    match &r {
        Ok(()) => println!("ok"),
        Err(e) => println!("err {}", e.raw_os_error().unwrap_or(0)),
    }
    r
}

/// Moves this process into the cgroup `dir` (a write of its pid to
/// `cgroup.procs`), prints `escaped`, then runs `cmd` there.
fn escape(dir: &str, cmd: &[&str]) -> std::io::Result<()> {
    std::fs::write(
        format!("{dir}/cgroup.procs"),
        std::process::id().to_string(),
    )?;
    println!("escaped");
    std::io::stdout().flush()?;
    match cmd.split_first() {
        Some((prog, args)) => Command::new(prog).args(args).status().map(drop),
        None => Ok(()),
    }
}

/// Starts `sleep SECONDS`, moves it into the cgroup `dir`, prints `moved
/// PID`, then waits for it and prints how it ended (`exit N`, `signal N`).
fn escape_other(dir: &str, seconds: &str) -> std::io::Result<()> {
    use std::os::unix::process::ExitStatusExt as _;
    let mut child = Command::new("sleep").arg(seconds).spawn()?;
    std::fs::write(format!("{dir}/cgroup.procs"), child.id().to_string())?;
    println!("moved {}", child.id());
    std::io::stdout().flush()?;
    let status = child.wait()?;
    match (status.code(), status.signal()) {
        (Some(c), _) => println!("exit {c}"),
        (_, Some(s)) => println!("signal {s}"),
        _ => println!("unknown"),
    }
    Ok(())
}

/// Creates a process straight in the cgroup `dir` (`clone3` with
/// `CLONE_INTO_CGROUP`: nothing is moved) that runs `sleep SECONDS`;
/// prints `created PID`, waits for it and prints how it ended.
fn clone_into(dir: &str, seconds: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let cgroup = std::fs::File::open(dir)?;
    let sleep = cstring("/bin/sleep");
    let arg = cstring(seconds);
    let argv = [sleep.as_ptr(), arg.as_ptr(), std::ptr::null()];
    let mut args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 as fork: the child only calls execv and _exit, which
    // are async-signal-safe, with memory prepared before the call.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw mut args,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            libc::execv(sleep.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    println!("created {pid}");
    std::io::stdout().flush()?;
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid as i32, &raw mut status, 0) };
    if libc::WIFSIGNALED(status) {
        println!("signal {}", libc::WTERMSIG(status));
    } else {
        println!("exit {}", libc::WEXITSTATUS(status));
    }
    Ok(())
}

/// `ok`, or `err ERRNO` (1 is EPERM).
fn result(r: std::io::Result<()>) -> String {
    match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("err {}", e.raw_os_error().unwrap_or(0)),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match a.as_slice() {
        ["connect", addr] => TcpStream::connect(addr).map(|_| ()),
        ["udp", addr] => UdpSocket::bind(if addr.starts_with('[') {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        })
        .and_then(|s| s.send_to(b"vigil", addr).map(|_| ())),
        ["open", path] => std::fs::File::open(path).map(|_| ()),
        ["create", path] => std::fs::File::create(path).map(|_| ()),
        ["flood-open", path, n] => {
            let n: u64 = n.parse().expect("count");
            for _ in 0..n {
                let _ = std::fs::File::open(path);
            }
            Ok(())
        }
        ["openat-swap", dir, name, decoy] => openat_swap(dir, name, decoy),
        ["exec-fd", prog, args @ ..] => exec_from_fd(prog, args, false),
        ["uring-read", path] => uring_read(path),
        ["socket", family, ty, protocol] => socket(family, ty, protocol),
        ["resolve-glibc", name] => resolve_glibc(name),
        ["unix", kind @ ("stream" | "dgram"), address] => unix(kind, address),
        ["escape", dir, cmd @ ..] => escape(dir, cmd),
        ["escape-other", dir, seconds] => escape_other(dir, seconds),
        ["clone-into", dir, seconds] => clone_into(dir, seconds),
        ["exec-memfd", prog, args @ ..] => exec_from_fd(prog, args, true),
        ["signal", pid, sig] => reach("kill", || {
            // SAFETY: kill(2) with plain integers.
            unsafe { libc::kill(pid.parse().expect("pid"), sig.parse().expect("signal")) }.into()
        }),
        // PTRACE_SEIZE stops nothing (PTRACE_ATTACH would stop the target
        // with SIGSTOP); the tracer's exit detaches it.
        ["ptrace-seize", pid] => reach("ptrace", || {
            // SAFETY: ptrace(2) with plain integers and null pointers.
            unsafe {
                libc::ptrace(
                    libc::PTRACE_SEIZE,
                    pid.parse::<libc::pid_t>().expect("pid"),
                    std::ptr::null_mut::<libc::c_void>(),
                    std::ptr::null_mut::<libc::c_void>(),
                )
            }
        }),
        ["vm-read", pid] => reach("process_vm_readv", || vm_read(pid)),
        ["pidfd-open", pid] => reach("pidfd_open", || {
            // SAFETY: pidfd_open(2) with plain integers.
            unsafe { libc::syscall(libc::SYS_pidfd_open, pid.parse::<i32>().expect("pid"), 0) }
        }),
        ["bpf-obj-get", path] => reach("bpf", || bpf_obj_get(path)),
        ["accept-once", addr] => TcpListener::bind(addr).and_then(|l| {
            // Tell the test where we listen, then serve one connection.
            println!("{}", l.local_addr()?);
            std::io::stdout().flush()?;
            let (mut s, _) = l.accept()?;
            let mut buf = [0u8; 1];
            let _ = s.read(&mut buf);
            Ok(())
        }),
        ["spawn", rest @ ..] if !rest.is_empty() => {
            Command::new(rest[0]).args(&rest[1..]).status().map(|_| ())
        }
        ["dns-connect", server, name, port] => dns_connect(server, name, port),
        ["serve"] => serve(),
        ["sleep", ms] => {
            std::thread::sleep(std::time::Duration::from_millis(ms.parse().expect("ms")));
            Ok(())
        }
        // Benchmark loops (`cargo xtask bench`). Each prints the wall-clock
        // and CPU nanoseconds its loop took (see `Timer`), so that process
        // start-up (and `vigil exec`) is not part of the figures.
        ["bench-exec", n] => {
            let timer = Timer::start();
            (0..n.parse::<u64>().expect("count"))
                .try_for_each(|_| match Command::new("/bin/true").status()? {
                    s if s.success() => Ok(()),
                    s => Err(std::io::Error::other(format!("/bin/true: {s}"))),
                })
                .map(|()| timer.report())
        }
        ["bench-connect", n] => TcpListener::bind("127.0.0.1:0").and_then(|listener| {
            let addr = listener.local_addr()?;
            // A full accept queue drops SYNs and costs a 1 s retransmit, so
            // the queue is as long as the kernel allows (listen again sets
            // it) and a thread accepts and closes.
            nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::MAXCONN)?;
            std::thread::spawn(move || listener.incoming().for_each(drop));
            // Closing with a reset leaves no TIME_WAIT socket behind: tens of
            // thousands of them would make finding a free local port, not the
            // connect, what the loop measures.
            let abort = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            let timer = Timer::start();
            (0..n.parse::<u64>().expect("count"))
                .try_for_each(|_| {
                    let stream = TcpStream::connect(addr)?;
                    nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::Linger, &abort)
                        .map_err(std::io::Error::from)
                })
                .map(|()| timer.report())
        }),
        ["bench-open", path, n] => {
            let timer = Timer::start();
            (0..n.parse::<u64>().expect("count"))
                .try_for_each(|_| std::fs::File::open(path).map(drop))
                .map(|()| timer.report())
        }
        // Opens, reads and closes DIR/0 .. DIR/{N-1}: every open a file the
        // process has not opened before, as in a walk over a source tree.
        ["bench-open-distinct", dir, n] => {
            let mut buf = [0u8; 4096];
            let timer = Timer::start();
            (0..n.parse::<u64>().expect("count"))
                .try_for_each(|i| {
                    let mut file = std::fs::File::open(format!("{dir}/{i}"))?;
                    while file.read(&mut buf)? > 0 {}
                    Ok(())
                })
                .map(|()| timer.report())
        }
        // Runs PROGRAM ARGS and reports its time (with its children's CPU),
        // so that only the command is measured, not what started it.
        ["bench-run", program, args @ ..] => {
            let timer = Timer::start();
            match Command::new(program).args(args).status() {
                Ok(s) if s.success() => {
                    timer.report();
                    Ok(())
                }
                Ok(s) => Err(std::io::Error::other(format!("{program}: {s}"))),
                Err(e) => Err(e),
            }
        }
        // Opens at a steady RATE per second: an open that is ahead of the
        // clock waits for it.
        ["bench-open-rate", path, n, rate] => {
            let rate: f64 = rate.parse().expect("rate per second");
            let start = std::time::Instant::now();
            (0..n.parse::<u64>().expect("count"))
                .try_for_each(|i| {
                    while i as f64 > start.elapsed().as_secs_f64() * rate {
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                    std::fs::File::open(path).map(drop)
                })
                .map(|()| println!("{}", start.elapsed().as_nanos()))
        }
        _ => {
            eprintln!(
                "usage: vigil-workload connect|udp|open|create|flood-open|openat-swap|exec-fd|exec-memfd|uring-read|socket|resolve-glibc|unix|escape|escape-other|clone-into|accept-once|spawn|sleep|signal|ptrace-seize|vm-read|pidfd-open|bpf-obj-get ..."
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-workload: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Wall-clock and CPU time of a benchmark loop. CPU time counts every
/// thread and every waited-for child (`/bin/true` in the exec loop), so it
/// shows what the loop itself paid even when other work on the machine
/// stretches the wall-clock time.
struct Timer {
    wall: std::time::Instant,
    cpu_ns: u64,
}

impl Timer {
    fn start() -> Self {
        Self {
            wall: std::time::Instant::now(),
            cpu_ns: cpu_ns(),
        }
    }

    /// Prints `WALL_NS CPU_NS`.
    fn report(&self) {
        println!(
            "{} {}",
            self.wall.elapsed().as_nanos(),
            cpu_ns().saturating_sub(self.cpu_ns)
        );
    }
}

/// utime + stime + cutime + cstime of this process, from `/proc/self/stat`
/// (in `USER_HZ` ticks, 100 per second on Linux).
fn cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after_comm = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    // Fields 14 to 17 of the file; the state (field 3) comes first here.
    after_comm
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse::<u64>().expect("CPU time field"))
        .sum::<u64>()
        * 10_000_000
}
