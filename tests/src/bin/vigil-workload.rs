//! Workloads for the integration tests: small, exact actions the tests run
//! inside (or outside) agent sessions and then look for in the event stream.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream, UdpSocket},
    process::{Command, ExitCode},
};

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
