//! DNS messages as they cross the wire: the question of a query and the
//! address records of a response, read without trusting any length or
//! pointer in them.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("dns message of {0} bytes is shorter than its 12-byte header")]
    TooShort(usize),
    #[error("dns message is a query, not a response")]
    NotResponse,
    #[error("dns response has no question")]
    NoQuestion,
    #[error("dns name at offset {0} runs past the end of the message")]
    Truncated(usize),
    #[error("dns name at offset {0} has a compression pointer that does not point backwards")]
    BadPointer(usize),
    #[error("dns name at offset {0} uses a reserved label type")]
    BadLabel(usize),
    #[error("dns name at offset {0} is longer than 255 bytes")]
    NameTooLong(usize),
    #[error("dns question at offset {0} lacks its type and class")]
    QuestionTruncated(usize),
    #[error("dns message is a response, not a query")]
    NotQuery,
}

/// The parts of a DNS response the scope engine uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsResponse {
    pub id: u16,
    pub rcode: u8,
    /// The (first) question name, lower-case, no trailing dot; bytes outside
    /// printable ASCII are written `\DDD`.
    pub name: String,
    /// A and AAAA answers (class IN), in message order; CNAME chains are
    /// attributed to the question name.
    pub addresses: Vec<IpAddr>,
    /// Smallest TTL of those answers, seconds; 0 when there are none.
    pub ttl: u32,
    /// The TC bit was set, or the payload ended (or broke) inside the
    /// answers: the addresses are those that could be read.
    pub incomplete: bool,
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// Reads a possibly compressed name at `start`; returns it and the offset after it.
fn read_name(buf: &[u8], start: usize) -> Result<(String, usize), DnsError> {
    let mut out = String::new();
    let mut pos = start;
    // Every pointer must go below the start of the run of labels it ends,
    // so positions strictly decrease and a loop is impossible.
    let mut run_start = start;
    let mut after: Option<usize> = None;
    let mut wire_len = 0usize;
    loop {
        let len = *buf.get(pos).ok_or(DnsError::Truncated(start))?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                return Ok((out, after.unwrap_or(pos + 1)));
            }
            0x00 => {
                let l = usize::from(len);
                let label = buf
                    .get(pos + 1..pos + 1 + l)
                    .ok_or(DnsError::Truncated(start))?;
                wire_len += l + 1;
                if wire_len > 255 {
                    return Err(DnsError::NameTooLong(start));
                }
                if !out.is_empty() {
                    out.push('.');
                }
                for &b in label {
                    if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                        out.push(char::from(b.to_ascii_lowercase()));
                    } else {
                        let _ = write!(out, "\\{b:03}");
                    }
                }
                pos += 1 + l;
            }
            0xC0 => {
                let low = *buf.get(pos + 1).ok_or(DnsError::Truncated(start))?;
                let target = (usize::from(len & 0x3F) << 8) | usize::from(low);
                if target >= run_start {
                    return Err(DnsError::BadPointer(start));
                }
                after.get_or_insert(pos + 2);
                pos = target;
                run_start = target;
            }
            _ => return Err(DnsError::BadLabel(start)),
        }
    }
}

/// Parses a DNS response (the UDP payload, possibly cut short). Errors only
/// when even the question cannot be read; damage after it ends the answers.
pub fn parse_response(buf: &[u8]) -> Result<DnsResponse, DnsError> {
    if buf.len() < 12 {
        return Err(DnsError::TooShort(buf.len()));
    }
    let id = u16_at(buf, 0).unwrap_or(0);
    let flags = u16_at(buf, 2).unwrap_or(0);
    if flags & 0x8000 == 0 {
        return Err(DnsError::NotResponse);
    }
    let qdcount = u16_at(buf, 4).unwrap_or(0);
    let ancount = u16_at(buf, 6).unwrap_or(0);
    if qdcount == 0 {
        return Err(DnsError::NoQuestion);
    }
    let (name, after) = read_name(buf, 12)?;
    if buf.len() < after + 4 {
        return Err(DnsError::QuestionTruncated(12));
    }
    let mut resp = DnsResponse {
        id,
        rcode: (flags & 0x000F) as u8,
        name,
        addresses: Vec::new(),
        ttl: 0,
        incomplete: flags & 0x0200 != 0,
    };
    let mut pos = after + 4;
    let mut min_ttl: Option<u32> = None;
    let mut complete = (1..qdcount).try_for_each(|_| {
        let (_, p) = read_name(buf, pos).ok()?;
        pos = p + 4;
        (pos <= buf.len()).then_some(())
    });
    for _ in 0..ancount {
        if complete.is_none() {
            break;
        }
        complete = (|| {
            let (_, p) = read_name(buf, pos).ok()?;
            let rtype = u16_at(buf, p)?;
            let class = u16_at(buf, p + 2)?;
            let ttl = u32_at(buf, p + 4)?;
            let rdlen = usize::from(u16_at(buf, p + 8)?);
            let rdata = buf.get(p + 10..p + 10 + rdlen)?;
            pos = p + 10 + rdlen;
            let addr = match (rtype, class, rdata.len()) {
                (1, 1, 4) => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(rdata).ok()?)),
                (28, 1, 16) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(rdata).ok()?)),
                _ => return Some(()),
            };
            // RFC 2181: a TTL with the top bit set means zero.
            let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
            min_ttl = Some(min_ttl.map_or(ttl, |m| m.min(ttl)));
            resp.addresses.push(addr);
            Some(())
        })();
    }
    resp.incomplete |= complete.is_none();
    resp.ttl = min_ttl.unwrap_or(0);
    Ok(resp)
}

/// The parts of a DNS query matched against its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsQuery {
    pub id: u16,
    /// The (first) question name, spelled as in [`DnsResponse::name`].
    pub name: String,
    /// Its type (1 A, 28 AAAA, 12 PTR, ...); 0 when the datagram was cut
    /// before it.
    pub qtype: u16,
}

/// Parses a DNS query (the UDP payload of a datagram to port 53).
pub fn parse_query(buf: &[u8]) -> Result<DnsQuery, DnsError> {
    if buf.len() < 12 {
        return Err(DnsError::TooShort(buf.len()));
    }
    let id = u16_at(buf, 0).unwrap_or(0);
    if u16_at(buf, 2).unwrap_or(0) & 0x8000 != 0 {
        return Err(DnsError::NotQuery);
    }
    if u16_at(buf, 4).unwrap_or(0) == 0 {
        return Err(DnsError::NoQuestion);
    }
    let (name, after) = read_name(buf, 12)?;
    let qtype = u16_at(buf, after).unwrap_or(0);
    Ok(DnsQuery { id, name, qtype })
}
