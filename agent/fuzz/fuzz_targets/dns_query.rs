//! A DNS query as an agent sends it: its question name is what the scope
//! and the tunnelling checks read.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::scope::dns::{LabelLimits, entropy, parse_query, suspicious_label};

/// The defaults of `[scope]`.
const LIMITS: LabelLimits = LabelLimits {
    long_label: 50,
    entropy_label: 32,
    entropy_bits: 4.0,
};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = parse_query(data) else {
        return;
    };
    assert!(query.name.len() <= 4 * 255, "{}", query.name.len());
    let _ = suspicious_label(&query.name, &LIMITS);
    for label in query.name.split('.') {
        let e = entropy(label);
        assert!(e.is_finite() && e >= 0.0, "entropy {e} of {label:?}");
    }
});
