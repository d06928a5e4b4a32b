//! Redacting injected credentials from what an upstream sends back.
//!
//! An upstream that echoes a request (a debug endpoint, an error quoting the
//! header) must not hand the agent the credential the proxy injected. The
//! [`Redactor`] replaces every occurrence of the injected values in a
//! streamed body, across chunk boundaries, holding back only a tail that
//! could still be the start of one, so server-sent events are not delayed.

use bytes::{Bytes, BytesMut};

/// What replaces a redacted value.
pub const MARK: &[u8] = b"[redacted by warrant]";

/// Replaces `needles` in a stream of chunks.
#[derive(Debug)]
pub struct Redactor {
    needles: Vec<Vec<u8>>,
    held: BytesMut,
}

impl Redactor {
    /// A redactor for these values (empty and very short ones are ignored:
    /// they would redact ordinary text, and are not credentials).
    pub fn new(needles: Vec<Vec<u8>>) -> Self {
        let mut needles: Vec<Vec<u8>> = needles.into_iter().filter(|n| n.len() >= 8).collect();
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Self {
            needles,
            held: BytesMut::new(),
        }
    }

    /// Whether there is anything to redact.
    pub fn is_active(&self) -> bool {
        !self.needles.is_empty()
    }

    /// Replaces every occurrence in `data` (a whole value).
    pub fn redact_all(&self, data: &[u8]) -> Option<Vec<u8>> {
        if !self.is_active() {
            return None;
        }
        let (out, found) = self.replace(data);
        found.then_some(out)
    }

    fn replace(&self, data: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        let mut found = false;
        'outer: while i < data.len() {
            for n in &self.needles {
                if data[i..].starts_with(n) {
                    out.extend_from_slice(MARK);
                    i += n.len();
                    found = true;
                    continue 'outer;
                }
            }
            out.push(data[i]);
            i += 1;
        }
        (out, found)
    }

    /// The longest suffix of `data` that is a proper prefix of a needle.
    fn partial_tail(&self, data: &[u8]) -> usize {
        let mut best = 0;
        for n in &self.needles {
            let max = (n.len() - 1).min(data.len());
            for k in (best + 1..=max).rev() {
                if data[data.len() - k..] == n[..k] {
                    best = k;
                    break;
                }
            }
        }
        best
    }

    /// Takes the next chunk; returns what may be sent now.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        if !self.is_active() {
            return Bytes::copy_from_slice(chunk);
        }
        self.held.extend_from_slice(chunk);
        let data = self.held.split().freeze();
        // Find the last place a match could start that is not yet complete.
        let keep = self.partial_tail(&data);
        let (ready, tail) = data.split_at(data.len() - keep);
        // A match may straddle `ready` and `tail` only if it started in
        // `ready` and is complete in `data`; replace over the whole buffer
        // and cut at the same logical point.
        let (out, _) = self.replace(ready);
        self.held.extend_from_slice(tail);
        Bytes::from(out)
    }

    /// The end of the stream: what was held back.
    pub fn finish(&mut self) -> Bytes {
        let data = self.held.split();
        Bytes::from(self.replace(&data).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(r: &mut Redactor, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&r.push(c));
        }
        out.extend_from_slice(&r.finish());
        out
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
}
