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

/// The spellings of `v` an echo commonly takes.
fn spellings(v: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![v.to_vec()];
    if let Ok(text) = std::str::from_utf8(v)
        && let Ok(json) = serde_json::to_string(text)
    {
        let inner = json[1..json.len() - 1].to_owned();
        out.push(inner.replace('/', "\\/").into_bytes());
        out.push(inner.into_bytes());
    }
    let mut upper = Vec::new();
    let mut lower = Vec::new();
    for &b in v {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            upper.push(b);
            lower.push(b);
        } else {
            upper.extend_from_slice(format!("%{b:02X}").as_bytes());
            lower.extend_from_slice(format!("%{b:02x}").as_bytes());
        }
    }
    out.push(upper);
    out.push(lower);
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        out.push(engine.encode(v).into_bytes());
    }
    out
}

impl Redactor {
    /// A redactor for these values and their common spellings (values
    /// shorter than 8 bytes are ignored).
    pub fn new(values: Vec<Vec<u8>>) -> Self {
        let mut needles: Vec<Vec<u8>> = values
            .iter()
            .filter(|v| v.len() >= MIN_LEN)
            .flat_map(|v| spellings(v))
            .filter(|n| n.len() >= MIN_LEN)
            .collect();
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        let mut first = [false; 256];
        for n in &needles {
            first[usize::from(n[0])] = true;
        }
        Self {
            needles,
            first,
            held: BytesMut::new(),
        }
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
                if rest.starts_with(n) {
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
                    .any(|n| n.len() > rest.len() && n.starts_with(rest))
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
            prop_assume!(!contains(text.as_bytes(), needle));
            let mut r = Redactor::new(vec![needle.to_vec()]);
            let parts = chunked(text.as_bytes(), &cuts);
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(run(&mut r, &refs), text.as_bytes().to_vec());
        }
    }
}
