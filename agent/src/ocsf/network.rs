//! Network Activity (4001) for connects, datagram sends and accepts, and
//! DNS Activity (4003) for the queries watched sockets send and the
//! answers they receive.

use std::borrow::Cow;
use std::net::IpAddr;

use serde::Serialize;

use crate::event::{self, Accept, Connect, Protocol};

use super::{Activity, Class, OcsfEvent, status};

#[derive(Debug, Serialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Debug, Serialize)]
pub struct ConnectionInfo {
    pub direction_id: u8,
    pub direction: &'static str,
    pub protocol_name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_num: Option<u8>,
}

#[derive(Debug, Serialize)]
pub struct DnsQuery<'a> {
    pub hostname: &'a str,
    /// The message id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_uid: Option<u16>,
    /// The question type by name (`A`, `AAAA`, ...), or its number.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub rr_type: Option<Cow<'static, str>>,
}

/// The mnemonic of a DNS question type, its number for the rare ones.
fn qtype_name(qtype: u16) -> Option<Cow<'static, str>> {
    Some(Cow::Borrowed(match qtype {
        0 => return None,
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        n => return Some(Cow::Owned(n.to_string())),
    }))
}

#[derive(Debug, Serialize)]
pub struct DnsAnswer {
    pub rdata: String,
    #[serde(rename = "type")]
    pub rr_type: &'static str,
    pub ttl: u32,
}

const NETWORK_ACTIVITY: Class = Class {
    uid: 4001,
    name: "Network Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const DNS_ACTIVITY: Class = Class {
    uid: 4003,
    name: "DNS Activity",
    category_uid: 4,
    category_name: "Network Activity",
};

fn endpoint(ip: IpAddr, port: u16) -> Endpoint {
    Endpoint {
        ip,
        port: Some(port),
    }
}

fn connection(direction: (u8, &'static str), protocol: Protocol) -> ConnectionInfo {
    let (protocol_name, protocol_num) = match protocol {
        Protocol::Tcp => ("tcp", Some(6)),
        Protocol::Udp => ("udp", Some(17)),
        Protocol::Other => ("other", None),
    };
    ConnectionInfo {
        direction_id: direction.0,
        direction: direction.1,
        protocol_name,
        protocol_num,
    }
}

const INBOUND: (u8, &str) = (1, "Inbound");
const OUTBOUND: (u8, &str) = (2, "Outbound");

pub(super) fn connect(r: &mut OcsfEvent<'_>, x: &Connect) -> (Class, Activity) {
    r.dst_endpoint = Some(endpoint(x.address, x.port));
    r.connection_info = Some(connection(OUTBOUND, x.protocol));
    let (id, name) = status(!x.blocked);
    (r.status_id, r.status) = (Some(id), Some(name));
    let activity = if x.blocked {
        r.status_detail = Some(Cow::Borrowed("refused with EPERM in the kernel"));
        (5, "Refuse")
    } else {
        (1, "Open")
    };
    (NETWORK_ACTIVITY, activity)
}

pub(super) fn accept(r: &mut OcsfEvent<'_>, x: &Accept) -> (Class, Activity) {
    r.src_endpoint = Some(endpoint(x.remote_address, x.remote_port));
    r.dst_endpoint = Some(endpoint(x.local_address, x.local_port));
    r.connection_info = Some(connection(INBOUND, Protocol::Tcp));
    (NETWORK_ACTIVITY, (1, "Open"))
}

pub(super) fn dns_answer<'a>(r: &mut OcsfEvent<'a>, x: &'a event::DnsAnswer) -> (Class, Activity) {
    r.src_endpoint = Some(Endpoint {
        ip: x.server,
        port: None,
    });
    r.query = Some(DnsQuery {
        hostname: &x.name,
        packet_uid: Some(x.id),
        rr_type: None,
    });
    r.answers = Some(
        x.addresses
            .iter()
            .map(|a| DnsAnswer {
                rdata: a.to_string(),
                rr_type: if a.is_ipv4() { "A" } else { "AAAA" },
                ttl: x.ttl,
            })
            .collect(),
    );
    (r.rcode_id, r.rcode) = (Some(0), Some("NoError"));
    (DNS_ACTIVITY, (2, "Response"))
}

pub(super) fn dns_query<'a>(r: &mut OcsfEvent<'a>, x: &'a event::DnsQuery) -> (Class, Activity) {
    r.src_endpoint = Some(endpoint(x.client, x.client_port));
    r.dst_endpoint = Some(endpoint(x.server, x.server_port));
    r.query = Some(DnsQuery {
        hostname: &x.name,
        packet_uid: Some(x.id),
        rr_type: qtype_name(x.qtype),
    });
    (DNS_ACTIVITY, (1, "Query"))
}

#[cfg(test)]
mod tests {
    use super::super::testing::of_kind;

    #[test]
    fn network_kinds_open_or_refuse() {
        let c = of_kind("connect");
        assert_eq!(
            (c[0]["class_uid"].clone(), c[0]["activity_id"].clone()),
            (4001.into(), 1.into())
        );
        assert_eq!(c[0]["dst_endpoint"]["ip"], "203.0.113.7");
        assert_eq!(c[0]["dst_endpoint"]["port"], 443);
        assert_eq!(c[0]["connection_info"]["direction_id"], 2);
        assert_eq!(c[0]["connection_info"]["protocol_num"], 6);
        assert_eq!(c[1]["activity_id"], 5, "blocked: Refuse");
        assert_eq!(c[1]["type_uid"], 400_105);
        let a = &of_kind("accept")[0];
        assert_eq!(a["activity_id"], 1);
        assert_eq!(a["src_endpoint"]["ip"], "10.0.0.9");
        assert_eq!(a["dst_endpoint"]["port"], 8080);
        assert_eq!(a["connection_info"]["direction_id"], 1);
        let d = &of_kind("dns_answer")[0];
        assert_eq!(
            (d["class_uid"].clone(), d["activity_id"].clone()),
            (4003.into(), 2.into())
        );
        assert_eq!(d["query"]["hostname"], "api.github.com");
        assert_eq!(d["answers"][0]["rdata"], "140.82.112.6");
        assert_eq!(d["answers"][1]["type"], "AAAA");
        assert_eq!(d["answers"][1]["ttl"], 60);
        let q = &of_kind("dns_query")[0];
        assert_eq!(
            (q["class_uid"].clone(), q["activity_id"].clone()),
            (4003.into(), 1.into())
        );
        assert_eq!(q["query"]["type"], "AAAA");
        assert_eq!(q["dst_endpoint"]["port"], 53);
    }
}
