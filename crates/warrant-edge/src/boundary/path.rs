//! One spelling of each proxied path.
//!
//! Allow rules and policy decide on a path; the upstream acts on a path. If
//! the two could read one request differently, a request allowed as
//! `/public/...` could reach `/admin`. So the edge decides on the canonical
//! form and forwards exactly that form, and refuses every path that has no
//! single reading: anything a server might resolve to another path (dot
//! segments, empty segments, path parameters as servlet containers read
//! `..;`, backslashes), anything a server might decode into a delimiter
//! (`%2F`, `%5C`, `%25`, `%3B`, `%3F`, `%23`, control characters), bytes
//! that are not UTF-8 once decoded (overlong encodings some servers decode to
//! `.` or `/`), and characters some servers fold to `.`, `/` or `\`.
//!
//! The canonical form (RFC 3986 §6.2.2): percent-escapes of unreserved
//! characters decoded, every other escape with upper-case hex digits.
//! Canonicalising a canonical path changes nothing.

/// Characters some servers normalise (Unicode NFKC, "best fit" mappings)
/// into `.`, `/` or `\`.
const CONFUSABLES: &[char] = &[
    '\u{FF0E}', // FULLWIDTH FULL STOP
    '\u{FE52}', // SMALL FULL STOP
    '\u{2024}', // ONE DOT LEADER
    '\u{FF0F}', // FULLWIDTH SOLIDUS
    '\u{2215}', // DIVISION SLASH
    '\u{2044}', // FRACTION SLASH
    '\u{29F8}', // BIG SOLIDUS
    '\u{FF3C}', // FULLWIDTH REVERSE SOLIDUS
    '\u{FE68}', // SMALL REVERSE SOLIDUS
    '\u{2216}', // SET MINUS
    '\u{00A5}', // YEN SIGN: `\` in Japanese code pages ("best fit")
    '\u{20A9}', // WON SIGN: `\` in Korean code pages
];

/// Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties): soft
/// hyphens, zero-width and bidi controls, variation selectors, tags. Some
/// normalisers drop them, so `adm\u{AD}in` would be `admin` to the
/// upstream but not to a policy on `/admin*`.
const IGNORABLE: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{034F}', '\u{034F}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{115F}', '\u{1160}'),
    ('\u{17B4}', '\u{17B5}'),
    ('\u{180B}', '\u{180F}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{206F}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{FE00}', '\u{FE0F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFA0}', '\u{FFA0}'),
    ('\u{FFF0}', '\u{FFF8}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0000}', '\u{E0FFF}'),
];

fn ignorable(c: char) -> bool {
    IGNORABLE.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Whether Unicode compatibility normalisation (NFKC, which some servers
/// and frameworks apply to paths) turns `c` into text holding a character
/// with a meaning in a path: `.`, `/`, `\`, `;`, `%`, `?`, `#`, `:` or a
/// control character (`‥` is `..`, `℀` is `a/c`).
fn folds_to_delimiter(c: char) -> bool {
    use unicode_normalization::UnicodeNormalization as _;
    !c.is_ascii()
        && std::iter::once(c)
            .nfkc()
            .any(|f| matches!(f, '.' | '/' | '\\' | ';' | '%' | '?' | '#' | ':') || f.is_control())
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The canonical form of `path` (a request path below the route, starting
/// with `/`), or why it has none. The error completes "the path ...".
pub fn canonical_path(path: &str) -> Result<String, &'static str> {
    if !path.starts_with('/') {
        return Err("does not start with `/`");
    }
    if !path.is_ascii() {
        return Err("is not ASCII");
    }
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    // What the path says once every escape is decoded, to check as text.
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err("has a `%` that is not a percent-escape");
            };
            let v = hi * 16 + lo;
            if matches!(v, b'/' | b'\\' | b'%' | b';' | b'?' | b'#') || v < 0x20 || v == 0x7f {
                return Err(
                    "encodes `/`, `\\`, `%`, `;`, `?`, `#` or a control character, which a server could decode into a delimiter",
                );
            }
            if unreserved(v) {
                out.push(char::from(v));
            } else {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(hi)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(lo)]));
            }
            decoded.push(v);
            i += 3;
            continue;
        }
        match c {
            b'\\' => return Err("contains `\\`"),
            b';' => {
                return Err(
                    "has a path parameter (`;`), which servers resolve differently (`/..;/` is `/../` to some)",
                );
            }
            c if c < 0x20 || c == 0x7f => return Err("contains a control character"),
            _ => {}
        }
        out.push(char::from(c));
        decoded.push(c);
        i += 1;
    }
    let Ok(text) = std::str::from_utf8(&decoded) else {
        return Err(
            "percent-encodes bytes that are not UTF-8 (such as overlong encodings of `.` or `/`)",
        );
    };
    if text
        .chars()
        .any(|c| CONFUSABLES.contains(&c) || folds_to_delimiter(c))
    {
        return Err("encodes a character some servers read as `.`, `/` or `\\`");
    }
    if text.chars().any(ignorable) {
        return Err(
            "encodes an invisible character (a soft hyphen, a zero-width or bidi control) that some servers drop",
        );
    }
    if out.contains("//") {
        return Err("has an empty segment (`//`)");
    }
    if out.split('/').any(|s| s == "." || s == "..") {
        return Err("has a `.` or `..` segment");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_with_two_readings_are_refused() {
        for bad in [
            "/v1/../admin",
            "/v1/%2e%2e/x",
            "/v1/%2E%2e%2Fx",
            "/a%2fb",
            "/a\\b",
            "/a%5cb",
            "/./a",
            "/a//b",
            "/a%252e",
            "/public/..;/admin",
            "/public/..;x=1/admin",
            "/public;/admin",
            "/public/%2e%2e;/admin",
            "/public/a%3b/admin",
            // Found after the fix: NFKC folds these into `..`, `...`, `a/c`.
            "/public/%E2%80%A5/admin",
            "/public/%EF%B8%B0/admin",
            "/public/%E2%80%A6/x",
            "/public/%E2%84%80/x",
            // Found in the second round: best-fit `\` and ignorables.
            "/public/a%C2%A5..%C2%A5admin",
            "/public/a%E2%82%A9..%E2%82%A9admin",
            "/public/adm%C2%ADin",
            "/public/adm%E2%80%8Bin",
            "/public/adm%EF%BB%BFin",
            "/a%3f/b",
            "/a%23/b",
            "/a%00b",
            "/a%0ab",
            "/a%7fb",
            "/%c0%ae%c0%ae/admin",
            "/%e0%80%ae/x",
            "/a%ff",
            "/%ef%bc%8e%ef%bc%8e/admin",
            "/a%e2%88%95b",
            "/a%zz",
            "/a%2",
            "/a%",
            "relative",
        ] {
            assert!(canonical_path(bad).is_err(), "{bad}");
        }
        for (given, canonical) in [
            ("/", "/"),
            ("/v1/chat/completions", "/v1/chat/completions"),
            ("/v1/files/file-1.txt", "/v1/files/file-1.txt"),
            ("/a%20b", "/a%20b"),
            ("/v1/x..y", "/v1/x..y"),
            ("/v1/%61dmin%7e%3a%3A", "/v1/admin~%3A%3A"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a.b/c...", "/a.b/c..."),
            ("/v1/models/", "/v1/models/"),
        ] {
            assert_eq!(canonical_path(given).as_deref(), Ok(canonical), "{given}");
        }
    }

    /// A segment a server could resolve or split differently from ours.
    fn resolvable(segment: &str) -> bool {
        let lower = segment.to_ascii_lowercase();
        segment == "."
            || segment == ".."
            || segment.contains(';')
            || segment.contains('\\')
            || ["%2e", "%2f", "%5c", "%25", "%3b", "%3f", "%23", "%00"]
                .iter()
                .any(|p| lower.contains(p))
    }

    fn path_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_owned()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just(";".to_owned()),
            Just("\\".to_owned()),
            "%[0-9a-fA-F]{2}",
            "%[0-9a-fA-Fg-z]{0,2}",
            "[a-zA-Z0-9._~-]{1,4}",
            Just("%c0%ae".to_owned()),
            Just("%ef%bc%8e".to_owned()),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
    }

    proptest! {
        #[test]
        fn canonicalising_is_idempotent(p in path_like()) {
            if let Ok(c) = canonical_path(&p) {
                prop_assert_eq!(canonical_path(&c), Ok(c.clone()));
            }
        }

        #[test]
        fn a_canonical_path_has_no_segment_a_server_would_resolve(p in path_like()) {
            if let Ok(c) = canonical_path(&p) {
                // No empty segment (`//`), except after a trailing `/`,
                // which servers keep as it is (`/v1/models/`).
                let segments: Vec<&str> = c.split('/').skip(1).collect();
                let inner = &segments[..segments.len().saturating_sub(1)];
                prop_assert!(!inner.iter().any(|s| s.is_empty()), "{}", c);
                for s in c.split('/') {
                    prop_assert!(!resolvable(s), "{} in {}", s, c);
                }
                // Decoding every escape gives the same segments: no escape
                // hides a delimiter or a dot segment.
                let decoded: String = percent_decode(&c);
                prop_assert_eq!(decoded.split('/').count(), c.split('/').count());
                prop_assert!(!decoded.split('/').any(|s| s == "." || s == ".."));
            }
        }

        #[test]
        fn arbitrary_text_never_panics(p in "\\PC{0,64}") {
            let _ = canonical_path(&p);
        }
    }

    fn percent_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                )
            {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
