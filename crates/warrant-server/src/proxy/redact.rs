//! Redacting injected credentials from what an upstream sends back.
//!
//! An upstream that echoes a request (a debug endpoint, an error quoting the
//! header) must not hand the agent the credential the proxy injected. The
//! [`Redactor`] replaces every occurrence of the injected values in a
//! streamed body, across chunk boundaries, holding back only a tail that
//! could still be the start of one, so server-sent events are not delayed.
//! Besides each value as it is, it looks for the spellings an echo commonly
//! takes: JSON-escaped, percent-encoded and base64 (standard and URL-safe,
//! with and without padding). Answers the broker parses as JSON (the MCP
//! gateway's) are redacted as values instead ([`Redactor::redact_value`]),
//! so no JSON escape hides a value.
//!
//! What it is not: a defence against an upstream that sets out to hand the
//! agent a credential it knows, transformed (reversed, split, encrypted).
//! Byte matching catches echoes, not intent.

use base64::Engine as _;
use bytes::{Bytes, BytesMut};

/// What replaces a redacted value.
pub const MARK: &[u8] = b"[redacted by warrant]";

/// The shortest value redacted: shorter ones would redact ordinary text, and
/// are not credentials.
const MIN_LEN: usize = 8;

/// Replaces `needles` in a stream of chunks.
#[derive(Debug)]
pub struct Redactor {
    /// Longest first, so the longest complete match at a place wins.
    needles: Vec<Vec<u8>>,
    /// Whether a byte starts some needle: most bytes are passed on after
    /// one table lookup.
    first: [bool; 256],
    held: BytesMut,
}

/// `text` as the inside of a JSON string, with the characters `escape`
/// says written as `\uXXXX` (the rest as `serde_json` writes them).
fn json_escaped(text: &str, escape: impl Fn(char) -> bool) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if escape(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            let s = serde_json::to_string(&c.to_string()).unwrap_or_default();
            out.push_str(s.get(1..s.len().saturating_sub(1)).unwrap_or_default());
        }
    }
    out
}

/// `v` percent-encoded, with the bytes `keep` says left as they are.
fn percent_encoded(v: &[u8], keep: impl Fn(u8) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in v {
        if keep(b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// The base64 characters that encode only bytes of `v` when `v` starts
/// `offset` bytes (0 to 2) into the encoded data and anything may follow:
/// what every base64 of a text containing `v` contains.
fn base64_inside(v: &[u8], offset: usize, engine: &base64::engine::GeneralPurpose) -> Vec<u8> {
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(v);
    let encoded = engine.encode(&padded).into_bytes();
    // Character i holds bits 6i..6i+6 of the data; v has bits 8*offset..8*(offset+len).
    let first = (8 * offset).div_ceil(6);
    let end = (8 * (offset + v.len())) / 6;
    encoded
        .get(first..end.min(encoded.len()))
        .unwrap_or_default()
        .to_vec()
}

/// The spellings of `v` an echo commonly takes.
fn spellings(v: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![v.to_vec()];
    if let Ok(text) = std::str::from_utf8(v) {
        let plain = json_escaped(text, |_| false);
        out.push(plain.replace('/', "\\/").into_bytes());
        out.push(plain.into_bytes());
        // HTML-safe encoders (.NET's System.Text.Json, Go's encoding/json).
        out.push(
            json_escaped(text, |c| {
                matches!(c, '<' | '>' | '&' | '\'' | '+' | '`' | '"') || !c.is_ascii()
            })
            .into_bytes(),
        );
        // Every character escaped.
        out.push(json_escaped(text, |_| true).into_bytes());
    }
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    out.push(percent_encoded(v, unreserved));
    // Python's `quote` keeps `/`; JavaScript's `encodeURIComponent` keeps `!'()*`.
    out.push(percent_encoded(v, |b| unreserved(b) || b == b'/'));
    out.push(percent_encoded(v, |b| {
        unreserved(b) || matches!(b, b'!' | b'\'' | b'(' | b')' | b'*')
    }));
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        out.push(engine.encode(v).into_bytes());
    }
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
    ] {
        for offset in 0..3 {
            out.push(base64_inside(v, offset, engine));
        }
    }
    out
}

impl Redactor {
    /// A redactor for these values and their common spellings (values
    /// shorter than 8 bytes are ignored). Matching ignores ASCII case: hex
    /// digits of escapes come in either case, and a value that differs from
    /// a credential only in case is redacted too rather than risk it.
    pub fn new(values: Vec<Vec<u8>>) -> Self {
        let mut needles: Vec<Vec<u8>> = values
            .iter()
            .filter(|v| v.len() >= MIN_LEN)
            .flat_map(|v| spellings(v))
            .filter(|n| n.len() >= MIN_LEN)
            .map(|n| n.to_ascii_lowercase())
            .collect();
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        let mut first = [false; 256];
        for n in &needles {
            first[usize::from(n[0])] = true;
            first[usize::from(n[0].to_ascii_uppercase())] = true;
        }
        Self {
            needles,
            first,
            held: BytesMut::new(),
        }
    }

    /// Whether `data` holds a credential (in any spelling, any case).
    pub fn occurs_ignoring_case(&self, data: &[u8]) -> bool {
        self.is_active() && self.scan(data, true).2
    }

    /// Whether there is anything to redact.
    pub fn is_active(&self) -> bool {
        !self.needles.is_empty()
    }

    /// Replaces every occurrence in `data` (a whole value); `None` if there
    /// was none.
    pub fn redact_all(&self, data: &[u8]) -> Option<Vec<u8>> {
        if !self.is_active() {
            return None;
        }
        let (out, _, found) = self.scan(data, true);
        found.then_some(out)
    }

    /// Replaces every occurrence in every string (and object key) of a
    /// parsed JSON value; whether there was one.
    pub fn redact_value(&self, v: &mut serde_json::Value) -> bool {
        use serde_json::Value;
        if !self.is_active() {
            return false;
        }
        let mut found = false;
        match v {
            Value::String(s) => {
                if let Some(clean) = self.redact_all(s.as_bytes()) {
                    *s = String::from_utf8_lossy(&clean).into_owned();
                    found = true;
                }
            }
            Value::Array(items) => {
                for i in items {
                    found |= self.redact_value(i);
                }
            }
            Value::Object(map) => {
                let dirty: Vec<String> = map
                    .keys()
                    .filter(|k| self.redact_all(k.as_bytes()).is_some())
                    .cloned()
                    .collect();
                for k in dirty {
                    if let Some(val) = map.remove(&k) {
                        let clean = self.redact_all(k.as_bytes()).unwrap_or_default();
                        map.insert(String::from_utf8_lossy(&clean).into_owned(), val);
                        found = true;
                    }
                }
                for val in map.values_mut() {
                    found |= self.redact_value(val);
                }
            }
            _ => {}
        }
        found
    }

    /// Copies `data`, replacing complete matches. Unless `at_end`, stops at
    /// the first place from which a needle could still complete with the
    /// next chunk. Returns what may be sent, how much of `data` it covers,
    /// and whether anything was replaced.
    fn scan(&self, data: &[u8], at_end: bool) -> (Vec<u8>, usize, bool) {
        let mut out = Vec::with_capacity(data.len());
        let mut found = false;
        let mut i = 0;
        'outer: while i < data.len() {
            if !self.first[usize::from(data[i])] {
                out.push(data[i]);
                i += 1;
                continue;
            }
            let rest = &data[i..];
            for n in &self.needles {
                if starts_with_ignoring_case(rest, n) {
                    out.extend_from_slice(MARK);
                    i += n.len();
                    found = true;
                    continue 'outer;
                }
            }
            // INVARIANT (no needle crosses a chunk unseen): nothing from a
            // place where a needle may still complete is released before
            // the bytes that decide it arrive.
            if !at_end
                && self
                    .needles
                    .iter()
                    .any(|n| n.len() > rest.len() && starts_with_ignoring_case(n, rest))
            {
                return (out, i, found);
            }
            out.push(data[i]);
            i += 1;
        }
        (out, data.len(), found)
    }

    /// Takes the next chunk; returns what may be sent now.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        if !self.is_active() {
            return Bytes::copy_from_slice(chunk);
        }
        self.held.extend_from_slice(chunk);
        let data = self.held.split().freeze();
        let (out, done, _) = self.scan(&data, false);
        self.held.extend_from_slice(&data[done..]);
        Bytes::from(out)
    }

    /// The end of the stream: what was held back.
    pub fn finish(&mut self) -> Bytes {
        let data = self.held.split();
        Bytes::from(self.scan(&data, true).0)
    }
}

/// Whether `hay` starts with `prefix`, ASCII case aside.
fn starts_with_ignoring_case(hay: &[u8], prefix: &[u8]) -> bool {
    hay.len() >= prefix.len() && hay[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(r: &mut Redactor, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&r.push(c));
        }
        out.extend_from_slice(&r.finish());
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_secret_split_across_chunks_is_redacted() {
        let key = b"sk-live-0123456789";
        let text = b"data: {\"echo\": \"Bearer sk-live-0123456789\"}\n\n".to_vec();
        for split in 0..text.len() {
            for split2 in split..text.len() {
                let mut r = Redactor::new(vec![key.to_vec()]);
                let out = run(
                    &mut r,
                    &[&text[..split], &text[split..split2], &text[split2..]],
                );
                let s = String::from_utf8(out).unwrap();
                assert!(!s.contains("sk-live"), "{split}/{split2}: {s}");
                assert!(s.contains("Bearer [redacted by warrant]"), "{s}");
            }
        }
    }

    /// Issue 12, item 7: a credential ending exactly at a chunk boundary
    /// whose last bytes equal its first was sent on, all but those bytes.
    #[test]
    fn a_secret_ending_at_a_boundary_that_starts_like_it_ends_is_redacted() {
        let key = b"ab-secret-value-ab";
        let mut r = Redactor::new(vec![key.to_vec()]);
        let first = r.push(b"token=ab-secret-value-ab");
        assert!(!contains(&first, b"secret-value"), "{first:?}");
        let out = [
            first.to_vec(),
            r.push(b" done").to_vec(),
            r.finish().to_vec(),
        ]
        .concat();
        assert_eq!(out, b"token=[redacted by warrant] done");
    }

    #[test]
    fn ordinary_chunks_are_not_held_back() {
        let mut r = Redactor::new(vec![b"sk-live-0123456789".to_vec()]);
        assert_eq!(&r.push(b"data: hello\n\n")[..], b"data: hello\n\n");
        // A tail that could begin the key waits for the next chunk...
        assert_eq!(&r.push(b"data: sk-")[..], b"data: ");
        // ...and is released when it turns out not to be the key.
        assert_eq!(&r.push(b"x\n\n")[..], b"sk-x\n\n");
        assert!(r.finish().is_empty());
    }

    #[test]
    fn whole_values_and_short_needles() {
        let r = Redactor::new(vec![b"abcdefgh12".to_vec(), b"abc".to_vec()]);
        assert_eq!(
            r.redact_all(b"x abcdefgh12 abc").unwrap(),
            b"x [redacted by warrant] abc"
        );
        assert!(r.redact_all(b"nothing").is_none());
        assert!(!Redactor::new(vec![b"short".to_vec()]).is_active());
    }

    #[test]
    fn common_spellings_of_an_echo_are_redacted() {
        let secret = b"pa$$/word\"0123";
        let r = Redactor::new(vec![secret.to_vec()]);
        for echoed in [
            r#"{"auth": "pa$$/word\"0123"}"#.to_owned(),
            r#"{"auth": "pa$$\/word\"0123"}"#.to_owned(),
            "q=pa%24%24%2Fword%220123".to_owned(),
            "q=pa%24%24%2fword%220123".to_owned(),
            base64::engine::general_purpose::STANDARD.encode(secret),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
        ] {
            let out = r.redact_all(echoed.as_bytes()).unwrap_or_default();
            assert!(contains(&out, MARK), "{echoed}");
        }
        // Found after the fix: spellings other encoders produce.
        let b64 = |data: &[u8]| base64::engine::general_purpose::STANDARD.encode(data);
        let full: String = "pa$$/word\"0123"
            .chars()
            .map(|c| format!("\\u{:04X}", c as u32))
            .collect();
        for echoed in [
            // .NET's HTML-safe JSON escapes `"` (and `+`, `<`, ...) as \u00XX.
            r#"{"auth": "pa$$/word\u00220123"}"#.to_owned(),
            full,
            // Python's quote() keeps `/`; hex digits in any case.
            "q=pa%24%24/word%220123".to_owned(),
            "q=pa%24%24%2Fword%2f%22%220123".replace("%2f%22%22", "%22"),
            "q=PA%24%24%2fWORD%220123".to_owned(),
            // Base64 of a text the value sits inside, at each alignment.
            b64(&[b"x".as_slice(), secret].concat()),
            b64(&[b"xy".as_slice(), secret, b"tail"].concat()),
            b64(&[b"xyz".as_slice(), secret, b"!"].concat()),
        ] {
            let out = r.redact_all(echoed.as_bytes()).unwrap_or_default();
            assert!(contains(&out, MARK), "{echoed}");
        }
        assert!(r.occurs_ignoring_case(b"x-PA$$/WORD\"0123-y"));
        assert!(!r.occurs_ignoring_case(b"x-pa$$/word-y"));
        // Parsed JSON: any escape of the value is seen through.
        let mut v: serde_json::Value =
            serde_json::from_str(r#"{"text": "key \u0070a$$/word\"0123!", "pa$$/word\"0123": 1}"#)
                .unwrap();
        assert!(r.redact_value(&mut v));
        let s = v.to_string();
        assert!(!s.contains("word"), "{s}");
    }

    fn chunked(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.sort_unstable();
        let mut out = Vec::new();
        let mut last = 0;
        for p in points {
            out.push(data[last..p].to_vec());
            last = p;
        }
        out.push(data[last..].to_vec());
        out
    }

    proptest! {
        /// Adversarial needles (over a two-letter alphabet, so they overlap
        /// themselves and the text) in text made of their pieces: however
        /// the stream is chunked, no needle comes out.
        #[test]
        fn redaction_never_emits_the_needle_across_any_chunking(
            needle in "[ab]{8,14}",
            pieces in proptest::collection::vec(prop_oneof!["[ab]{1,6}", Just(" ".to_owned())], 0..12),
            copies in 0usize..3,
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let mut text = pieces.concat();
            for _ in 0..copies {
                text.push_str(&needle);
                text.push_str(&pieces.concat());
            }
            let mut r = Redactor::new(vec![needle.as_bytes().to_vec()]);
            let parts = chunked(text.as_bytes(), &cuts);
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let out = run(&mut r, &refs);
            prop_assert!(!contains(&out, needle.as_bytes()), "{:?} in {:?}", needle, String::from_utf8_lossy(&out));
            // Chunking changes nothing: the whole text redacts the same.
            let whole = Redactor::new(vec![needle.as_bytes().to_vec()])
                .redact_all(text.as_bytes())
                .unwrap_or_else(|| text.as_bytes().to_vec());
            prop_assert_eq!(out, whole);
        }

        /// Text without the needle passes unchanged, whatever the chunking.
        #[test]
        fn clean_text_passes_unchanged(
            text in "[ -~]{0,120}",
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let needle = b"zz-credential-zz";
            prop_assume!(!contains(&text.to_ascii_lowercase().into_bytes(), needle));
            let mut r = Redactor::new(vec![needle.to_vec()]);
            let parts = chunked(text.as_bytes(), &cuts);
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(run(&mut r, &refs), text.as_bytes().to_vec());
        }
    }
}
