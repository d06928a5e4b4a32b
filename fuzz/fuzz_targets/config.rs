//! The `warrant.toml` loader: any text is a configuration or an error that
//! names what is wrong, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warrant_server::config::{Config, RawConfig, Settings};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(raw) = toml::from_str::<RawConfig>(text) {
        let _ = Config::build(&Settings::default(), raw);
    }
});
