//! A `Subscribe` request body as a client sends it: decoded, then turned
//! into the hub's start and filter (or a status naming the bad field).

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use vigil::wire::pb;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = pb::SubscribeRequest::decode(data) else {
        return;
    };
    if let Err(status) = vigil::api::events::parse(request) {
        assert!(!status.message().is_empty(), "{status:?}");
    }
});
