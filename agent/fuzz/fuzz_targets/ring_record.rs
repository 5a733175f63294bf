//! A ring-buffer record as the kernel hands it over: any bytes, any length.
//! Whatever `decode` accepts must turn into an event and then into the
//! journal's encoding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::journal::Encoded;
use vigil::sensors::decode::{Clock, decode, to_event};
use vigil::wire::pb;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = decode(data) else { return };
    let event = to_event(&record, &Clock::now());
    let wire = pb::Event::from(&event);
    Encoded::encode(&wire).expect("a decoded record encodes");
});
