//! Redacting injected credentials from what an upstream sends back.
//!
//! An upstream that echoes a request (a debug endpoint, an error quoting the
//! header) must not hand the agent the credential the proxy injected. The
//! [`Redactor`] replaces every occurrence of the injected values in a
//! streamed body, across chunk boundaries, holding back only a tail that
//! could still be the start of one, so server-sent events are not delayed.
//!
//! It looks for each value in the spellings an echo takes, matched without
//! regard to ASCII case (hex digits come in either case; a value that
//! differs from a credential only in case is redacted too):
//!
//! - character by character, each character as itself or escaped in any
//!   way a text format writes it (percent-encoding, JSON `\uXXXX` and short
//!   escapes, HTML character references, quoted-printable `=XX`, `+` for a
//!   space), in any mix, across line breaks and quoted-printable soft breaks;
//! - base64 and base64url, of the value alone or of a longer text it sits
//!   in (at each of the three alignments), across line breaks (MIME);
//! - UTF-16, either byte order.
//!
//! Answers the broker parses as JSON (the MCP gateway's) are redacted as
//! values instead ([`Redactor::redact_value`]), so no JSON escape hides one.
//!
//! What it is not: a defence against an upstream that sets out to hand the
//! agent a credential it knows, transformed otherwise (reversed, split,
//! hashed, encrypted, a part of it). Matching catches echoes, not intent.

use base64::Engine as _;
use bytes::{Bytes, BytesMut};

/// What replaces a redacted value.
pub const MARK: &[u8] = b"[redacted by warrant]";

/// The shortest value redacted: shorter ones would redact ordinary text, and
/// are not credentials.
const MIN_LEN: usize = 8;

/// What may interrupt a needle in an echo without ending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrap {
    /// Nothing.
    None,
    /// Line breaks (`\r`, `\n`): base64 wrapped at 76 columns.
    Lines,
    /// Line breaks and quoted-printable soft breaks (`=` at a line's end).
    Soft,
}

/// One value in one family of spellings: a sequence of units, each a set of
/// byte strings any of which spells it (lower-case, longest first).
#[derive(Debug)]
struct Needle {
    units: Vec<Vec<Vec<u8>>>,
    wrap: Wrap,
}

/// How far a needle matches at a place.
#[derive(Debug, PartialEq, Eq)]
enum Walk {
    /// All of it, over this many bytes.
    Full(usize),
    /// The data ends where it could still match.
    Partial,
    /// Not here.
    Mismatch,
}

impl Needle {
    /// `bytes` exactly (but for ASCII case).
    fn literal(bytes: &[u8], wrap: Wrap) -> Self {
        Self {
            units: bytes
                .iter()
                .map(|b| vec![vec![b.to_ascii_lowercase()]])
                .collect(),
            wrap,
        }
    }

    /// `v` character by character, each in any of its escaped spellings.
    fn escaped(v: &[u8]) -> Self {
        let units = match std::str::from_utf8(v) {
            Ok(text) => text.chars().map(char_spellings).collect(),
            Err(_) => v.iter().map(|&b| byte_spellings(b)).collect(),
        };
        Self {
            units,
            wrap: Wrap::Soft,
        }
    }

    /// How many bytes in `hay` may be skipped at `i`: one line break
    /// (`\n`, `\r\n`, `\r`) or soft break (`=` before one); `None` when
    /// the data ends where it cannot yet tell.
    fn skip(&self, hay: &[u8], i: usize, at_end: bool) -> Option<usize> {
        let at = |k: usize| hay.get(i + k).copied();
        let undecided = if at_end { Some(0) } else { None };
        match (self.wrap, at(0)) {
            (Wrap::None, _) | (_, None) => Some(0),
            (_, Some(b'\n')) => Some(1),
            (_, Some(b'\r')) => match at(1) {
                Some(b'\n') => Some(2),
                Some(_) => Some(1),
                None => at_end.then_some(1),
            },
            (Wrap::Soft, Some(b'=')) => match (at(1), at(2)) {
                (Some(b'\n'), _) => Some(2),
                (Some(b'\r'), Some(b'\n')) => Some(3),
                (Some(b'\r'), None) | (None, _) => undecided,
                _ => Some(0),
            },
            _ => Some(0),
        }
    }

    /// Whether, and how far, the needle matches at the start of `hay`. With
    /// more data to come (`!at_end`), a place where a longer spelling could
    /// still complete is `Partial`, so nothing is released too early.
    fn walk(&self, hay: &[u8], at_end: bool) -> Walk {
        let mut i = 0;
        for (k, unit) in self.units.iter().enumerate() {
            match unit_at(unit, &hay[i..], at_end) {
                Walk::Full(n) => i += n,
                Walk::Partial => return Walk::Partial,
                Walk::Mismatch if k == 0 => return Walk::Mismatch,
                // At most one break between two units: a line is wrapped
                // once, and a run of breaks would let an echo hold back the
                // whole stream (and have it rescanned with every chunk).
                Walk::Mismatch => match self.skip(hay, i, at_end) {
                    None => return Walk::Partial,
                    Some(0) => return Walk::Mismatch,
                    Some(gap) => match unit_at(unit, &hay[i + gap..], at_end) {
                        Walk::Full(n) => i += gap + n,
                        other => return other,
                    },
                },
            }
        }
        Walk::Full(i)
    }
}

/// Whether one unit (any of its spellings, the longest that fits) starts
/// `rest`.
fn unit_at(unit: &[Vec<u8>], rest: &[u8], at_end: bool) -> Walk {
    let Some(c) = rest.first().map(u8::to_ascii_lowercase) else {
        return if at_end {
            Walk::Mismatch
        } else {
            Walk::Partial
        };
    };
    let mut full = None;
    for alt in unit {
        if alt.first() != Some(&c) {
            continue;
        }
        if rest.len() >= alt.len() {
            if full.is_none() && rest[..alt.len()].eq_ignore_ascii_case(alt) {
                full = Some(alt.len());
            }
        } else if !at_end && alt[..rest.len()].eq_ignore_ascii_case(rest) {
            return Walk::Partial;
        }
    }
    full.map_or(Walk::Mismatch, Walk::Full)
}

/// The spellings of one character of a value (lower-case, longest first).
fn char_spellings(c: char) -> Vec<Vec<u8>> {
    let mut utf8 = [0u8; 4];
    let raw = c.encode_utf8(&mut utf8).as_bytes().to_vec();
    let mut out: Vec<String> = Vec::new();
    // Percent-encoding and quoted-printable, byte by byte.
    out.push(raw.iter().map(|b| format!("%{b:02x}")).collect());
    out.push(raw.iter().map(|b| format!("={b:02x}")).collect());
    // JSON: `\uXXXX` (surrogate pairs beyond the BMP), short escapes.
    let mut units = [0u16; 2];
    out.push(
        c.encode_utf16(&mut units)
            .iter()
            .map(|u| format!("\\u{u:04x}"))
            .collect(),
    );
    match c {
        '"' => out.push("\\\"".into()),
        '\\' => out.push("\\\\".into()),
        '/' => out.push("\\/".into()),
        '\n' => out.push("\\n".into()),
        '\r' => out.push("\\r".into()),
        '\t' => out.push("\\t".into()),
        '\u{8}' => out.push("\\b".into()),
        '\u{c}' => out.push("\\f".into()),
        _ => {}
    }
    // HTML character references.
    out.push(format!("&#{};", u32::from(c)));
    out.push(format!("&#x{:x};", u32::from(c)));
    match c {
        '&' => out.push("&amp;".into()),
        '<' => out.push("&lt;".into()),
        '>' => out.push("&gt;".into()),
        '"' => out.push("&quot;".into()),
        '\'' => out.push("&apos;".into()),
        ' ' => out.push("+".into()),
        _ => {}
    }
    let mut all: Vec<Vec<u8>> = out.into_iter().map(String::into_bytes).collect();
    all.push(raw.to_ascii_lowercase());
    all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    all.dedup();
    all
}

/// The spellings of one byte of a value that is not UTF-8 text.
fn byte_spellings(b: u8) -> Vec<Vec<u8>> {
    vec![
        format!("%{b:02x}").into_bytes(),
        format!("={b:02x}").into_bytes(),
        vec![b.to_ascii_lowercase()],
    ]
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

/// Every needle of one value.
fn needles_of(v: &[u8]) -> Vec<Needle> {
    let mut out = vec![Needle::escaped(v)];
    let mut b64 = Vec::new();
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        b64.push(engine.encode(v).into_bytes());
    }
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
    ] {
        for offset in 0..3 {
            b64.push(base64_inside(v, offset, engine));
        }
    }
    b64.sort();
    b64.dedup();
    out.extend(
        b64.iter()
            .filter(|n| n.len() >= MIN_LEN)
            .map(|n| Needle::literal(n, Wrap::Lines)),
    );
    if let Ok(text) = std::str::from_utf8(v) {
        let utf16: Vec<u16> = text.encode_utf16().collect();
        let le: Vec<u8> = utf16.iter().flat_map(|u| u.to_le_bytes()).collect();
        let be: Vec<u8> = utf16.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push(Needle::literal(&le, Wrap::None));
        out.push(Needle::literal(&be, Wrap::None));
    }
    out
}

/// Replaces injected values in a stream of chunks.
#[derive(Debug)]
pub struct Redactor {
    needles: Vec<Needle>,
    /// Which needles may start with each byte.
    starts: Vec<Vec<usize>>,
    /// The pairs of bytes a match may start with, one bit each: most places
    /// in a body are passed over after one lookup.
    pairs: Box<[u64; 1024]>,
    held: BytesMut,
}

/// Both ASCII cases of `b`.
fn cases(b: u8) -> [u8; 2] {
    [b.to_ascii_lowercase(), b.to_ascii_uppercase()]
}

impl Redactor {
    /// A redactor for these values in all their spellings (values shorter
    /// than 8 bytes are ignored).
    pub fn new(values: Vec<Vec<u8>>) -> Self {
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let mut needles = Vec::new();
        for v in values.into_iter().filter(|v| v.len() >= MIN_LEN) {
            if seen.contains(&v) {
                continue;
            }
            needles.extend(needles_of(&v));
            seen.push(v);
        }
        let mut starts = vec![Vec::new(); 256];
        let mut pairs = Box::new([0u64; 1024]);
        let mut mark = |a: u8, b: u8| {
            let bit = usize::from(a) << 8 | usize::from(b);
            pairs[bit / 64] |= 1 << (bit % 64);
        };
        for (k, n) in needles.iter().enumerate() {
            // What may follow a one-byte spelling of the first unit: the
            // second unit, or a break before it.
            let mut next: Vec<u8> = match n.wrap {
                Wrap::None => Vec::new(),
                Wrap::Lines => vec![b'\r', b'\n'],
                Wrap::Soft => vec![b'\r', b'\n', b'='],
            };
            match n.units.get(1) {
                Some(unit) => next.extend(unit.iter().filter_map(|alt| alt.first())),
                None => next.extend(0..=u8::MAX),
            }
            for alt in n.units.first().into_iter().flatten() {
                let Some(&a) = alt.first() else { continue };
                for a in cases(a) {
                    if !starts[usize::from(a)].contains(&k) {
                        starts[usize::from(a)].push(k);
                    }
                    match alt.get(1) {
                        Some(&b) => cases(b).into_iter().for_each(|b| mark(a, b)),
                        None => next.iter().flat_map(|&b| cases(b)).for_each(|b| mark(a, b)),
                    }
                }
            }
        }
        Self {
            needles,
            starts,
            pairs,
            held: BytesMut::new(),
        }
    }

    /// Whether a match may start with the bytes `a`, `b`.
    fn pair(&self, a: u8, b: u8) -> bool {
        let bit = usize::from(a) << 8 | usize::from(b);
        self.pairs[bit / 64] & (1 << (bit % 64)) != 0
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

    /// Copies `data`, replacing complete matches (the longest at a place).
    /// Unless `at_end`, stops at the first place from which a needle could
    /// still complete with the next chunk. Returns what may be sent, how
    /// much of `data` it covers, and whether anything was replaced.
    fn scan(&self, data: &[u8], at_end: bool) -> (Vec<u8>, usize, bool) {
        let mut out = Vec::with_capacity(data.len());
        let mut found = false;
        let mut i = 0;
        let mut copied = 0;
        while i < data.len() {
            // The next place a match may start (the last byte always may).
            i += data[i..]
                .windows(2)
                .position(|w| self.pair(w[0], w[1]))
                .unwrap_or(data.len() - 1 - i);
            if i == data.len() - 1 && self.starts[usize::from(data[i])].is_empty() {
                break;
            }
            let rest = &data[i..];
            let mut best = None;
            let mut partial = false;
            for &k in &self.starts[usize::from(data[i])] {
                match self.needles[k].walk(rest, at_end) {
                    Walk::Full(n) => best = Some(best.map_or(n, |b: usize| b.max(n))),
                    Walk::Partial => partial = true,
                    Walk::Mismatch => {}
                }
            }
            if let Some(n) = best {
                out.extend_from_slice(&data[copied..i]);
                out.extend_from_slice(MARK);
                i += n;
                copied = i;
                found = true;
                continue;
            }
            // INVARIANT (no needle crosses a chunk unseen): nothing from a
            // place where a needle may still complete is released before
            // the bytes that decide it arrive.
            if partial && !at_end {
                out.extend_from_slice(&data[copied..i]);
                return (out, i, found);
            }
            i += 1;
        }
        out.extend_from_slice(&data[copied..]);
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

    /// What is held back is bounded by the longest spelling of a value: a
    /// run of line breaks after a first character (which an agent can have
    /// an echoing upstream send) must not hold back the stream, or have it
    /// rescanned with every chunk.
    #[test]
    fn a_run_of_line_breaks_does_not_hold_back_the_stream() {
        for start in [&b"s"[..], b"%73", b"c2st", b"="] {
            let mut r = Redactor::new(vec![b"sk-live-0123456789".to_vec()]);
            let mut sent = r.push(start).len();
            let mut pushed = start.len();
            for gap in [&b"\n"[..], b"\r\n", b"=\r\n", b"\r"] {
                for _ in 0..2000 {
                    pushed += gap.len();
                    sent += r.push(gap).len();
                }
                assert!(
                    pushed - sent < 64,
                    "{start:?}: {} bytes held",
                    pushed - sent
                );
            }
            sent += r.finish().len();
            assert_eq!(sent, pushed);
        }
        // One break between two characters is still a wrapped echo.
        let r = Redactor::new(vec![b"sk-live-0123456789".to_vec()]);
        for echo in [&b"sk-live-01\r\n23456789"[..], b"sk-live-01=\r\n23456789"] {
            assert_eq!(r.redact_all(echo).unwrap(), MARK, "{echo:?}");
        }
        assert!(r.redact_all(b"sk-live-01\n\n23456789").is_none());
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

    /// Found in the second round: spellings of other formats, and mixes.
    #[test]
    fn echoes_in_other_formats_are_redacted() {
        let secret = "demo-key-0123456789/AB+cd==";
        let r = Redactor::new(vec![secret.as_bytes().to_vec()]);
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        // MIME base64 of a request dump, wrapped at 76 columns.
        let dump = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Demo-Key: {secret}\r\n\r\n");
        let wrapped: String = b64(dump.as_bytes())
            .as_bytes()
            .chunks(76)
            .map(|l| format!("{}\r\n", String::from_utf8_lossy(l)))
            .collect();
        let utf16: Vec<u8> = secret.encode_utf16().flat_map(u16::to_le_bytes).collect();
        for echoed in [
            wrapped.into_bytes(),
            // Go's html/template: `+` as `&#43;`; others as named entities.
            "demo-key-0123456789&#47;AB&#43;cd&#61;&#x3D;"
                .as_bytes()
                .to_vec(),
            utf16,
            // Every byte percent-encoded; quoted-printable with a soft break.
            secret
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect::<String>()
                .into_bytes(),
            b"demo-key-0123456789/AB+cd=\r\n=3D=3D".to_vec(),
            // A mix of escapes, in one value.
            "demo%2Dkey\\u002d0123456789\\/AB%2bcd=3D&#61;"
                .as_bytes()
                .to_vec(),
        ] {
            let out = r.redact_all(&echoed).unwrap_or_default();
            assert!(contains(&out, MARK), "{}", String::from_utf8_lossy(&echoed));
            assert!(
                !contains(&out, b"0123456789"),
                "{}",
                String::from_utf8_lossy(&out)
            );
        }
    }

    /// One spelling of `secret`, character by character.
    fn spell(secret: &str, choices: &[u8]) -> String {
        secret
            .chars()
            .zip(choices.iter().cycle())
            .map(|(c, k)| {
                let b = c as u32;
                match k % 6 {
                    0 => c.to_string(),
                    1 => format!("%{b:02X}"),
                    2 => format!("\\u{b:04x}"),
                    3 => format!("&#{b};"),
                    4 => format!("&#x{b:X};"),
                    _ => format!("={b:02X}"),
                }
            })
            .collect()
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

        /// However each character is escaped and the stream chunked, the
        /// echo does not come out.
        #[test]
        fn no_mix_of_escapes_gets_through(
            secret in "[a-zA-Z0-9+/=_.-]{8,20}",
            choices in proptest::collection::vec(0u8..6, 1..20),
            cuts in proptest::collection::vec(0usize..300, 0..8),
        ) {
            let spelled = spell(&secret, &choices);
            let text = format!("{{\"echo\": \"{spelled}\"}}");
            let mut r = Redactor::new(vec![secret.as_bytes().to_vec()]);
            let parts = chunked(text.as_bytes(), &cuts);
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let out = run(&mut r, &refs);
            prop_assert!(contains(&out, MARK), "{} -> {}", spelled, String::from_utf8_lossy(&out));
            prop_assert!(!contains(&out, spelled.as_bytes()));
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
