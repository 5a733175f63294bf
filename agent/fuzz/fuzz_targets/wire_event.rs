//! An encoded `vigil.v1.Event`, as read back from the journal or received
//! from a peer: the filters' scan and prost must agree on what they both
//! read, and a decoded event converts (or fails) without panicking.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use vigil::event::Event;
use vigil::journal::{Encoded, Fields, Filter};
use vigil::wire::pb;

fuzz_target!(|data: &[u8]| {
    let scanned = Encoded::new(Bytes::copy_from_slice(data));
    let decoded = pb::Event::decode(data);
    if let (Ok(scanned), Ok(decoded)) = (&scanned, &decoded) {
        assert_eq!(scanned.sequence(), decoded.sequence);
        let all = Filter::all();
        assert!(all.matches(decoded));
        let _ = Fields::of(decoded);
    }
    if let Ok(decoded) = decoded {
        let _ = Event::try_from(decoded);
    }
});
