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
//!   escapes, JavaScript and C escapes, HTML character references,
//!   quoted-printable `=XX`, `+` for a space), or such an escape escaped
//!   again (JSON in JSON, HTML twice, percent twice, a JSON escape in a
//!   URL), in any mix, across a line break, a quoted-printable soft break or
//!   a split CDATA section between two characters;
//! - base64 and base64url, of the value alone or of a longer text it sits
//!   in (at each of the three alignments), in UTF-8 or UTF-16, across a
//!   line break (MIME), folded or not, or a space;
//! - UTF-16 and UTF-32, either byte order.
//!
//! Each character's spellings form a trie built once per character and
//! shared; what a set of credentials needs is built once and cached.
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
    /// A line break (`\r`, `\n`, `\r\n`), folded or not (a space or tab
    /// after it), or a space: base64 wrapped at 76 columns or in a header.
    Lines,
    /// A line break, a quoted-printable soft break (`=` at a line's end) or
    /// a CDATA section split (`]]><![CDATA[`).
    Soft,
}

/// One character of a value: the byte strings any of which spells it
/// (lower-case), as a trie, so matching costs the length of the echo, not
/// the number of spellings.
#[derive(Debug)]
struct Unit {
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    next: Vec<(u8, u32)>,
    /// A spelling ends here.
    end: bool,
}

impl Unit {
    fn new(alts: Vec<Vec<u8>>) -> Self {
        let mut nodes = vec![Node::default()];
        for alt in alts.iter().filter(|a| !a.is_empty()) {
            let mut at = 0usize;
            for &b in alt {
                let b = b.to_ascii_lowercase();
                at = match nodes[at].next.iter().find(|e| e.0 == b) {
                    Some(&(_, n)) => n as usize,
                    None => {
                        let n = nodes.len();
                        nodes.push(Node::default());
                        nodes[at]
                            .next
                            .push((b, u32::try_from(n).unwrap_or(u32::MAX)));
                        n
                    }
                };
            }
            nodes[at].end = true;
        }
        Self { nodes }
    }

    fn child(&self, node: usize, b: u8) -> Option<usize> {
        self.nodes[node]
            .next
            .iter()
            .find(|e| e.0 == b)
            .map(|&(_, n)| n as usize)
    }

    /// The first bytes of its spellings.
    fn firsts(&self) -> impl Iterator<Item = u8> + '_ {
        self.nodes[0].next.iter().map(|e| e.0)
    }

    /// The second bytes of its spellings starting with `first`, and whether
    /// `first` alone spells it.
    fn seconds(&self, first: u8) -> (Vec<u8>, bool) {
        match self.child(0, first) {
            Some(n) => (
                self.nodes[n].next.iter().map(|e| e.0).collect(),
                self.nodes[n].end,
            ),
            None => (Vec::new(), false),
        }
    }

    /// Whether one spelling (the longest that fits) starts `rest`; with
    /// more data to come, `Partial` where a longer one could still.
    fn at(&self, rest: &[u8], at_end: bool) -> Walk {
        let mut node = 0;
        let mut best = None;
        for (i, &b) in rest.iter().enumerate() {
            match self.child(node, b.to_ascii_lowercase()) {
                Some(n) => {
                    node = n;
                    if self.nodes[n].end {
                        best = Some(i + 1);
                    }
                }
                None => return best.map_or(Walk::Mismatch, Walk::Full),
            }
        }
        if !at_end && !self.nodes[node].next.is_empty() {
            return Walk::Partial;
        }
        best.map_or(Walk::Mismatch, Walk::Full)
    }
}

/// The units of characters, built once per character and shared: every
/// credential spells its characters the same ways.
fn char_unit(c: char) -> std::sync::Arc<Unit> {
    use parking_lot::Mutex;
    use std::collections::HashMap;
    use std::sync::{Arc, OnceLock};
    static UNITS: OnceLock<Mutex<HashMap<char, Arc<Unit>>>> = OnceLock::new();
    let cache = UNITS.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(u) = cache.lock().get(&c).cloned() {
        return u;
    }
    let unit = Arc::new(Unit::new(char_spellings(c)));
    let mut m = cache.lock();
    if m.len() < 1024 {
        m.insert(c, unit.clone());
    }
    unit
}

/// One value in one family of spellings: a sequence of units.
#[derive(Debug)]
struct Needle {
    units: Vec<std::sync::Arc<Unit>>,
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

/// Splits a CDATA section in two, as XML writers do around `]]>`.
const CDATA_SPLIT: &[u8] = b"]]><![cdata[";

impl Needle {
    /// `bytes` exactly (but for ASCII case).
    fn literal(bytes: &[u8], wrap: Wrap) -> Self {
        Self {
            units: bytes
                .iter()
                .map(|b| std::sync::Arc::new(Unit::new(vec![vec![*b]])))
                .collect(),
            wrap,
        }
    }

    /// `v` character by character, each in any of its escaped spellings.
    fn escaped(v: &[u8]) -> Self {
        let units = match std::str::from_utf8(v) {
            Ok(text) => text.chars().map(char_unit).collect(),
            Err(_) => v
                .iter()
                .map(|&b| std::sync::Arc::new(Unit::new(byte_spellings(b))))
                .collect(),
        };
        Self {
            units,
            wrap: Wrap::Soft,
        }
    }

    /// How many bytes in `hay` may be skipped at `i`: one break of the
    /// needle's kind; `None` when the data ends where it cannot yet tell.
    fn skip(&self, hay: &[u8], i: usize, at_end: bool) -> Option<usize> {
        let at = |k: usize| hay.get(i + k).copied();
        let undecided = if at_end { Some(0) } else { None };
        // A line break, then (folded) one space or tab.
        let line = |k: usize| -> Option<usize> {
            let n = match (at(k), at(k + 1)) {
                (Some(b'\n'), _) => 1,
                (Some(b'\r'), Some(b'\n')) => 2,
                (Some(b'\r'), Some(_)) => 1,
                (Some(b'\r'), None) => return if at_end { Some(1) } else { None },
                _ => return Some(0),
            };
            match at(k + n) {
                Some(b' ' | b'\t') if self.wrap == Wrap::Lines => Some(n + 1),
                None if !at_end && self.wrap == Wrap::Lines => None,
                _ => Some(n),
            }
        };
        match (self.wrap, at(0)) {
            (Wrap::None, _) | (_, None) => Some(0),
            (_, Some(b'\r' | b'\n')) => line(0),
            (Wrap::Lines, Some(b' ' | b'\t')) => Some(1),
            (Wrap::Soft, Some(b'=')) => match (at(1), at(2)) {
                (Some(b'\n'), _) => Some(2),
                (Some(b'\r'), Some(b'\n')) => Some(3),
                (Some(b'\r'), None) | (None, _) => undecided,
                _ => Some(0),
            },
            (Wrap::Soft, Some(b']')) => {
                let rest = &hay[i..];
                let n = rest.len().min(CDATA_SPLIT.len());
                if !rest[..n].eq_ignore_ascii_case(&CDATA_SPLIT[..n]) {
                    Some(0)
                } else if n == CDATA_SPLIT.len() {
                    Some(n)
                } else {
                    undecided
                }
            }
            _ => Some(0),
        }
    }

    /// Whether, and how far, the needle matches at the start of `hay`. With
    /// more data to come (`!at_end`), a place where a longer spelling could
    /// still complete is `Partial`, so nothing is released too early.
    fn walk(&self, hay: &[u8], at_end: bool) -> Walk {
        let mut i = 0;
        for (k, unit) in self.units.iter().enumerate() {
            match unit.at(&hay[i..], at_end) {
                Walk::Full(n) => i += n,
                Walk::Partial => return Walk::Partial,
                Walk::Mismatch if k == 0 => return Walk::Mismatch,
                // At most one break between two units: a line is wrapped
                // once, and a run of breaks would let an echo hold back the
                // whole stream (and have it rescanned with every chunk).
                Walk::Mismatch => match self.skip(hay, i, at_end) {
                    None => return Walk::Partial,
                    Some(0) => return Walk::Mismatch,
                    Some(gap) => match unit.at(&hay[i + gap..], at_end) {
                        Walk::Full(n) => i += gap + n,
                        other => return other,
                    },
                },
            }
        }
        Walk::Full(i)
    }
}

/// HTML5 named character references for ASCII punctuation (those a
/// credential may hold), lower-case.
fn html_names(c: char) -> &'static [&'static str] {
    match c {
        '+' => &["&plus;"],
        '/' => &["&sol;"],
        '=' => &["&equals;"],
        '.' => &["&period;"],
        ',' => &["&comma;"],
        ':' => &["&colon;"],
        ';' => &["&semi;"],
        '!' => &["&excl;"],
        '?' => &["&quest;"],
        '#' => &["&num;"],
        '$' => &["&dollar;"],
        '%' => &["&percnt;"],
        '*' => &["&ast;", "&midast;"],
        '@' => &["&commat;"],
        '(' => &["&lpar;"],
        ')' => &["&rpar;"],
        '[' => &["&lsqb;", "&lbrack;"],
        ']' => &["&rsqb;", "&rbrack;"],
        '{' => &["&lcub;", "&lbrace;"],
        '}' => &["&rcub;", "&rbrace;"],
        '|' => &["&vert;", "&verbar;", "&verticalline;"],
        '^' => &["&hat;"],
        '`' => &["&grave;", "&diacriticalgrave;"],
        '_' => &["&lowbar;", "&underbar;"],
        '\\' => &["&bsol;"],
        '&' => &["&amp;"],
        '<' => &["&lt;"],
        '>' => &["&gt;"],
        '"' => &["&quot;"],
        '\'' => &["&apos;"],
        ' ' => &["&nbsp;"],
        '\t' => &["&tab;"],
        '\n' => &["&newline;"],
        _ => &[],
    }
}

/// The spellings of one character in one layer of escaping: itself,
/// percent-encoded, quoted-printable, JSON (`\uXXXX`, short escapes),
/// JavaScript and C (`\xHH`, `\u{H}`, octal, a backslash before
/// punctuation), HTML (numeric, zero-padded or without `;`, named).
fn one_layer(c: char) -> Vec<String> {
    let mut utf8 = [0u8; 4];
    let raw = c.encode_utf8(&mut utf8).as_bytes().to_vec();
    let mut out: Vec<String> = vec![c.to_string()];
    out.push(raw.iter().map(|b| format!("%{b:02x}")).collect());
    out.push(raw.iter().map(|b| format!("={b:02x}")).collect());
    out.push(raw.iter().map(|b| format!("\\x{b:02x}")).collect());
    out.push(raw.iter().map(|b| format!("\\{b:03o}")).collect());
    let mut units = [0u16; 2];
    out.push(
        c.encode_utf16(&mut units)
            .iter()
            .map(|u| format!("\\u{u:04x}"))
            .collect(),
    );
    let n = u32::from(c);
    out.push(format!("\\u{{{n:x}}}"));
    out.push(format!("\\u{{{n:04x}}}"));
    match c {
        '"' => out.push("\\\"".into()),
        '\\' => out.push("\\\\".into()),
        '\n' => out.push("\\n".into()),
        '\r' => out.push("\\r".into()),
        '\t' => out.push("\\t".into()),
        '\u{8}' => out.push("\\b".into()),
        '\u{c}' => out.push("\\f".into()),
        ' ' => out.push("+".into()),
        _ => {}
    }
    if c.is_ascii_punctuation() {
        out.push(format!("\\{c}"));
    }
    // Decimal references zero-padded to 7 digits, hex to 6, with and
    // without the `;` HTML parsers do without.
    let dec = n.to_string();
    let hex = format!("{n:x}");
    for width in dec.len()..=7 {
        out.push(format!("&#{dec:0>width$};"));
        out.push(format!("&#{dec:0>width$}"));
    }
    for width in hex.len()..=6 {
        out.push(format!("&#x{hex:0>width$};"));
        out.push(format!("&#x{hex:0>width$}"));
    }
    out.extend(html_names(c).iter().map(|s| (*s).to_owned()));
    out
}

/// A second layer of escaping applied to a whole spelling: how text that
/// already holds an escape is escaped again (JSON in JSON, a query value in
/// a query, HTML escaped twice, percent-encoded JSON).
fn second_layers(s: &str) -> Vec<String> {
    let json = |escape_slash: bool| -> String {
        let mut o = String::new();
        for ch in s.chars() {
            match ch {
                '\\' => o.push_str("\\\\"),
                '"' => o.push_str("\\\""),
                '/' if escape_slash => o.push_str("\\/"),
                _ => o.push(ch),
            }
        }
        o
    };
    let percent = |all: bool| -> String {
        if all {
            s.bytes().map(|b| format!("%{b:02x}")).collect()
        } else {
            percent_encode(s)
        }
    };
    let html: String = s
        .chars()
        .map(|ch| match ch {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            _ => ch.to_string(),
        })
        .collect();
    let qp: String = s
        .chars()
        .map(|ch| {
            if ch == '=' {
                "=3d".to_owned()
            } else {
                ch.to_string()
            }
        })
        .collect();
    vec![
        json(false),
        json(true),
        percent(false),
        percent(true),
        html,
        qp,
    ]
}

/// `s` percent-encoded as a URL component (unreserved characters as they are).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

/// The spellings of one character of a value, in one or two layers of
/// escaping (lower-case).
fn char_spellings(c: char) -> Vec<Vec<u8>> {
    let first = one_layer(c);
    let mut all: Vec<String> = first.clone();
    for s in first.iter().filter(|s| s.len() > 1 || !s.starts_with(c)) {
        all.extend(second_layers(s));
    }
    // A character that is itself escaped by the second layer (`/` in
    // JSON, `+` in a query).
    all.extend(second_layers(&c.to_string()));
    // A URL is the usual third layer (a JSON value, escaped twice, in a
    // query parameter).
    let url: Vec<String> = all
        .iter()
        .filter(|s| s.contains('\\'))
        .map(|s| percent_encode(s))
        .collect();
    all.extend(url);
    let mut all: Vec<Vec<u8>> = all
        .into_iter()
        .map(|s| s.to_ascii_lowercase().into_bytes())
        .collect();
    all.sort();
    all.dedup();
    all
}

/// The spellings of one byte of a value that is not UTF-8 text.
fn byte_spellings(b: u8) -> Vec<Vec<u8>> {
    vec![
        format!("%{b:02x}").into_bytes(),
        format!("%25{b:02x}").into_bytes(),
        format!("={b:02x}").into_bytes(),
        format!("\\x{b:02x}").into_bytes(),
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

/// The base64 needles of some bytes: whole, and inside a longer text.
fn base64_needles(v: &[u8], out: &mut Vec<Vec<u8>>) {
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
}

/// Every needle of one value.
fn needles_of(v: &[u8]) -> Vec<Needle> {
    let mut out = vec![Needle::escaped(v)];
    let mut b64 = Vec::new();
    base64_needles(v, &mut b64);
    let mut wide = Vec::new();
    if let Ok(text) = std::str::from_utf8(v) {
        let utf16: Vec<u16> = text.encode_utf16().collect();
        let utf32: Vec<u32> = text.chars().map(u32::from).collect();
        wide.push(
            utf16
                .iter()
                .flat_map(|u| u.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        wide.push(utf16.iter().flat_map(|u| u.to_be_bytes()).collect());
        wide.push(utf32.iter().flat_map(|u| u.to_le_bytes()).collect());
        wide.push(utf32.iter().flat_map(|u| u.to_be_bytes()).collect());
        // Base64 of the text in UTF-16 (as Windows and .NET encode it).
        base64_needles(&wide[0], &mut b64);
        base64_needles(&wide[1], &mut b64);
    }
    b64.sort();
    b64.dedup();
    out.extend(
        b64.iter()
            .filter(|n| n.len() >= MIN_LEN)
            .map(|n| Needle::literal(n, Wrap::Lines)),
    );
    out.extend(wide.iter().map(|w| Needle::literal(w, Wrap::None)));
    out
}

/// Replaces injected values in a stream of chunks.
#[derive(Debug)]
pub struct Redactor {
    index: std::sync::Arc<Index>,
    held: BytesMut,
}

/// What a redactor looks for, built once per set of values and shared by
/// the redactors of every request that injects them.
#[derive(Debug)]
struct Index {
    needles: Vec<Needle>,
    /// Which needles may start with each byte.
    starts: Vec<Vec<usize>>,
    /// The pairs of bytes a match may start with, one bit each: most places
    /// in a body are passed over after one lookup.
    pairs: Box<[u64; 1024]>,
}

/// Both ASCII cases of `b`.
fn cases(b: u8) -> [u8; 2] {
    [b.to_ascii_lowercase(), b.to_ascii_uppercase()]
}

impl Index {
    /// The index of these values, from the cache when it was built before
    /// (keyed by a digest of the values, never the values themselves).
    fn of(values: Vec<Vec<u8>>) -> std::sync::Arc<Self> {
        use parking_lot::Mutex;
        use sha2::Digest as _;
        use std::collections::HashMap;
        use std::sync::{Arc, OnceLock};
        static CACHE: OnceLock<Mutex<HashMap<[u8; 32], Arc<Index>>>> = OnceLock::new();
        let mut h = sha2::Sha256::new();
        for v in &values {
            h.update((v.len() as u64).to_be_bytes());
            h.update(v);
        }
        let key: [u8; 32] = h.finalize().into();
        let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
        if let Some(i) = cache.lock().get(&key).cloned() {
            return i;
        }
        let index = Arc::new(Self::build(values));
        {
            let mut m = cache.lock();
            // Rotated credentials leave old entries: start over now and then.
            if m.len() >= 256 {
                m.clear();
            }
            m.insert(key, index.clone());
        }
        index
    }

    fn build(values: Vec<Vec<u8>>) -> Self {
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
                Wrap::Lines => vec![b'\r', b'\n', b' ', b'\t'],
                Wrap::Soft => vec![b'\r', b'\n', b'=', b']'],
            };
            match n.units.get(1) {
                Some(unit) => next.extend(unit.firsts()),
                None => next.extend(0..=u8::MAX),
            }
            let Some(unit) = n.units.first() else {
                continue;
            };
            for a in unit.firsts().collect::<Vec<_>>() {
                let (seconds, alone) = unit.seconds(a);
                for a in cases(a) {
                    if !starts[usize::from(a)].contains(&k) {
                        starts[usize::from(a)].push(k);
                    }
                    for &b in &seconds {
                        cases(b).into_iter().for_each(|b| mark(a, b));
                    }
                    if alone {
                        next.iter().flat_map(|&b| cases(b)).for_each(|b| mark(a, b));
                    }
                }
            }
        }
        Self {
            needles,
            starts,
            pairs,
        }
    }
}

impl Redactor {
    /// A redactor for these values in all their spellings (values shorter
    /// than 8 bytes are ignored).
    pub fn new(values: Vec<Vec<u8>>) -> Self {
        Self {
            index: Index::of(values),
            held: BytesMut::new(),
        }
    }

    /// Whether a match may start with the bytes `a`, `b`.
    fn pair(&self, a: u8, b: u8) -> bool {
        let bit = usize::from(a) << 8 | usize::from(b);
        self.index.pairs[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// Whether `data` holds a credential (in any spelling, any case).
    pub fn occurs_ignoring_case(&self, data: &[u8]) -> bool {
        self.is_active() && self.scan(data, true).2
    }

    /// Whether there is anything to redact.
    pub fn is_active(&self) -> bool {
        !self.index.needles.is_empty()
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
            if i == data.len() - 1 && self.index.starts[usize::from(data[i])].is_empty() {
                break;
            }
            let rest = &data[i..];
            let mut best = None;
            let mut partial = false;
            for &k in &self.index.starts[usize::from(data[i])] {
                match self.index.needles[k].walk(rest, at_end) {
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

    /// Found in the third round: escapes of escapes (JSON in JSON, text
    /// HTML-escaped twice, double percent-encoding, percent-encoded JSON),
    /// JavaScript and C escapes, a backslash before punctuation, padded,
    /// unterminated and named HTML references, folded or spaced base64,
    /// base64 of UTF-16, UTF-32 and split CDATA.
    #[test]
    fn nested_and_other_escapes_are_redacted() {
        let secret = "demo-key-0123456789/AB+cd==";
        let r = Redactor::new(vec![secret.as_bytes().to_vec()]);
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        let each = |f: &dyn Fn(char) -> String| secret.chars().map(f).collect::<String>();
        let punct = |f: &dyn Fn(char) -> String| {
            each(&|c: char| {
                if c.is_ascii_alphanumeric() {
                    c.to_string()
                } else {
                    f(c)
                }
            })
        };
        let utf16: Vec<u8> = secret.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let utf32: Vec<u8> = secret
            .chars()
            .flat_map(|c| u32::from(c).to_be_bytes())
            .collect();
        let folded: String = b64(format!("X-Key: {secret}").as_bytes())
            .as_bytes()
            .chunks(10)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<Vec<_>>()
            .join("\r\n ");
        let spaced: String = b64(secret.as_bytes())
            .as_bytes()
            .chunks(4)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let echoes: Vec<Vec<u8>> = vec![
            b"demo-key-0123456789\\\\\\/AB+cd==".to_vec(),
            b"demo-key-0123456789/AB\\\\u002Bcd==".to_vec(),
            b"demo-key-0123456789%5C%5Cu002FAB%2Bcd%3D%3D".to_vec(),
            b"demo-key-0123456789%252FAB%252Bcd%253D%253D".to_vec(),
            b"demo-key-0123456789&amp;#47;AB&amp;#43;cd&amp;#61;&amp;#61;".to_vec(),
            punct(&|c| format!("&#{:04};", u32::from(c))).into_bytes(),
            punct(&|c| format!("&#x{:06X};", u32::from(c))).into_bytes(),
            b"demo-key-0123456789&#47AB&#43cd&#61&#61".to_vec(),
            b"demo-key-0123456789&sol;AB&plus;cd&equals;&equals;".to_vec(),
            punct(&|c| format!("\\x{:02x}", u32::from(c))).into_bytes(),
            punct(&|c| format!("\\{:03o}", u32::from(c))).into_bytes(),
            punct(&|c| format!("\\u{{{:x}}}", u32::from(c))).into_bytes(),
            punct(&|c| format!("\\{c}")).into_bytes(),
            folded.into_bytes(),
            spaced.into_bytes(),
            b64(&utf16).into_bytes(),
            utf32,
            b"<![CDATA[demo-key-0]]><![CDATA[123456789/AB+cd==]]>".to_vec(),
        ];
        for echoed in echoes {
            let out = r.redact_all(&echoed).unwrap_or_default();
            assert!(contains(&out, MARK), "{}", String::from_utf8_lossy(&echoed));
            assert!(
                !contains(&out, b"56789") && !contains(&out, b"5\x006\x00"),
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
