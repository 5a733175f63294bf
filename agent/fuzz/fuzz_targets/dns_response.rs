//! A DNS response as captured from the wire, cut short or not.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::scope::dns::{LabelLimits, parse_response, suspicious_label};

/// The defaults of `[scope]`.
const LIMITS: LabelLimits = LabelLimits {
    long_label: 50,
    entropy_label: 32,
    entropy_bits: 4.0,
};

fuzz_target!(|data: &[u8]| {
    let Ok(response) = parse_response(data) else {
        return;
    };
    // A name has at most 255 bytes on the wire; each shown byte is at most
    // four (`\DDD`), so anything longer means the parser ran past a bound.
    assert!(response.name.len() <= 4 * 255, "{}", response.name.len());
    let _ = suspicious_label(&response.name, &LIMITS);
});
