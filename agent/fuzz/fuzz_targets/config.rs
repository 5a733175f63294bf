//! A config file: any text through parsing and validation. A rejected one
//! must render its diagnostics, each placed inside the text it names.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text, "fuzz.toml") {
        Ok(_) => {}
        Err(e @ ConfigError::Invalid(_)) => {
            let rendered = e.to_string();
            assert!(!rendered.is_empty());
            let lines = text.lines().count().max(1);
            for d in e.diagnostics() {
                if let Some((line, column)) = d.location {
                    // One past the last line: an error at the end of a text
                    // that ends with a newline.
                    assert!(line >= 1 && line <= lines + 1, "line {line} of {lines}");
                    assert!(column >= 1, "column {column}");
                }
            }
        }
        Err(e) => panic!("parsing a text cannot fail to read: {e}"),
    }
});
