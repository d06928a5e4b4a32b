//! The proxy's path canonicaliser: never panics; a canonical path is a
//! fixed point and has no segment a server would resolve or split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warrant_edge::boundary::path::canonical_path;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = canonical_path(p) else {
        return;
    };
    assert_eq!(canonical_path(&c).as_deref(), Ok(c.as_str()), "not a fixed point: {p:?}");
    for seg in c.split('/') {
        let lower = seg.to_ascii_lowercase();
        assert!(seg != "." && seg != "..", "{p:?} -> {c:?}");
        assert!(!seg.contains(';') && !seg.contains('\\'), "{p:?} -> {c:?}");
        for bad in ["%2e", "%2f", "%5c", "%25", "%3b", "%3f", "%23", "%00"] {
            assert!(!lower.contains(bad), "{p:?} -> {c:?}");
        }
    }
    assert!(!c[1..].contains("//") && c.starts_with('/'), "{p:?} -> {c:?}");
});
