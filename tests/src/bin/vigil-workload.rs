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
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    sock.send_to(&q, server)?;
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf)?;
    // The answer follows the echoed question: name pointer, type, class,
    // ttl, rdlength, then the 4-byte address.
    let at = q.len() + 2 + 2 + 2 + 4 + 2;
    if n < at + 4 {
        return Err(std::io::Error::other("short DNS answer"));
    }
    let ip = std::net::Ipv4Addr::new(buf[at], buf[at + 1], buf[at + 2], buf[at + 3]);
    println!("{ip}");
    TcpStream::connect((ip, port.parse::<u16>().expect("port"))).map(|_| ())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match a.as_slice() {
        ["connect", addr] => TcpStream::connect(addr).map(|_| ()),
        ["udp", addr] => UdpSocket::bind(if addr.starts_with('[') { "[::1]:0" } else { "127.0.0.1:0" })
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
        ["accept-once", addr] => TcpListener::bind(addr).and_then(|l| {
            // Tell the test where we listen, then serve one connection.
            println!("{}", l.local_addr()?);
            std::io::stdout().flush()?;
            let (mut s, _) = l.accept()?;
            let mut buf = [0u8; 1];
            let _ = s.read(&mut buf);
            Ok(())
        }),
        ["spawn", rest @ ..] if !rest.is_empty() => Command::new(rest[0])
            .args(&rest[1..])
            .status()
            .map(|_| ()),
        ["dns-connect", server, name, port] => dns_connect(server, name, port),
        ["sleep", ms] => {
            std::thread::sleep(std::time::Duration::from_millis(ms.parse().expect("ms")));
            Ok(())
        }
        _ => {
            eprintln!("usage: vigil-workload connect|udp|open|create|flood-open|accept-once|spawn|sleep ...");
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
