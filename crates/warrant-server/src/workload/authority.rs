//! Gives HTTP/2 requests from SPIFFE clients an `:authority` hyper accepts.
//!
//! gRPC clients in C core (Python's `grpcio`, used by py-spiffe), Java and
//! Swift send, over a Unix socket, the percent-encoded socket path as the
//! `:authority` (`tmp%2Fwarrant-data%2Fworkload.sock`), which the `http`
//! crate refuses as an authority, so h2 resets every such stream with
//! PROTOCOL_ERROR (hyperium/h2#487, grpc/grpc#38142) and those clients
//! could never reach a tonic server. The Workload API does not use the
//! authority, so this reader rewrites it to `localhost` on the way in: it
//! reads the client's frames, and for each header block (HEADERS with its
//! CONTINUATIONs) decodes the HPACK, replaces `:authority`, and encodes the
//! block again with literals only (never indexed, so the server's dynamic
//! table stays empty and cannot drift from the client's). Every other frame
//! passes through untouched. A block larger than [`MAX_BLOCK`], or HPACK
//! that does not decode, ends the connection.
//!
//! It only reads what the client sends; answers go out unchanged.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The largest header block accepted, encoded.
pub const MAX_BLOCK: usize = 64 * 1024;
/// The largest header list accepted, decoded (RFC 7541 sizes: name, value
/// and 32 per field), h2's own default limit. Checked while decoding, so a
/// small block of references to a large table entry cannot make the broker
/// hold gigabytes before h2 would have refused it (attacker round).
pub const MAX_LIST: usize = 16 * 1024;
/// The dynamic table size the server advertises (the HTTP/2 default); a
/// client's table size update above it ends the connection.
const TABLE_SIZE: usize = 4096;
/// The largest frame this side sends on (the HTTP/2 default every server
/// accepts).
const MAX_FRAME: usize = 16 * 1024;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// A reader that rewrites `:authority` in the client's header blocks.
pub struct FixAuthority<IO> {
    inner: IO,
    /// Bytes read from the client and not yet parsed.
    input: Vec<u8>,
    /// Bytes ready for the server.
    output: Vec<u8>,
    preface_done: bool,
    /// A header block waiting for its CONTINUATIONs: stream, flags to keep,
    /// priority bytes, the fragments so far.
    pending: Option<(u32, u8, Vec<u8>, Vec<u8>)>,
    decoder: loona_hpack::Decoder<'static>,
    eof: bool,
}

impl<IO> FixAuthority<IO> {
    pub fn new(inner: IO) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Self {
            inner,
            input: Vec::new(),
            output: Vec::new(),
            preface_done: false,
            pending: None,
            decoder,
            eof: false,
        }
    }
}

fn bad(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned())
}

/// An HPACK integer with an `n`-bit prefix whose other bits are `first`.
fn put_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literals without indexing, no Huffman coding.
fn encode(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00); // literal without indexing, new name
        put_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name);
        put_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

impl<IO> FixAuthority<IO> {
    /// Parses whole frames from `input` into `output`.
    fn process(&mut self) -> std::io::Result<()> {
        if !self.preface_done {
            if self.input.len() < PREFACE.len() {
                return Ok(());
            }
            if &self.input[..PREFACE.len()] != PREFACE {
                return Err(bad("not an HTTP/2 connection"));
            }
            self.output.extend_from_slice(PREFACE);
            self.input.drain(..PREFACE.len());
            self.preface_done = true;
        }
        loop {
            if self.input.len() < 9 {
                return Ok(());
            }
            let len = (usize::from(self.input[0]) << 16)
                | (usize::from(self.input[1]) << 8)
                | usize::from(self.input[2]);
            if len > MAX_BLOCK {
                return Err(bad("an HTTP/2 frame is too large"));
            }
            if self.input.len() < 9 + len {
                return Ok(());
            }
            let kind = self.input[3];
            let flags = self.input[4];
            let stream =
                u32::from_be_bytes([self.input[5], self.input[6], self.input[7], self.input[8]])
                    & 0x7fff_ffff;
            let whole: Vec<u8> = self.input.drain(..9 + len).collect();
            let payload = &whole[9..];
            match (kind, &mut self.pending) {
                (HEADERS, None) => {
                    let mut p = payload;
                    let mut pad = 0usize;
                    if flags & PADDED != 0 {
                        let (&n, rest) = p.split_first().ok_or_else(|| bad("bad padding"))?;
                        pad = usize::from(n);
                        p = rest;
                    }
                    let mut priority = Vec::new();
                    if flags & PRIORITY != 0 {
                        if p.len() < 5 {
                            return Err(bad("bad priority"));
                        }
                        priority = p[..5].to_vec();
                        p = &p[5..];
                    }
                    if pad > p.len() {
                        return Err(bad("bad padding"));
                    }
                    let fragment = p[..p.len() - pad].to_vec();
                    let keep = flags & (END_STREAM | PRIORITY);
                    self.pending = Some((stream, keep, priority, fragment));
                    if flags & END_HEADERS != 0 {
                        self.finish_block()?;
                    }
                }
                (CONTINUATION, Some((s, _, _, block))) if *s == stream => {
                    block.extend_from_slice(payload);
                    if block.len() > MAX_BLOCK {
                        return Err(bad("a header block is too large"));
                    }
                    if flags & END_HEADERS != 0 {
                        self.finish_block()?;
                    }
                }
                (_, Some(_)) => return Err(bad("a header block was interrupted")),
                (_, None) => self.output.extend_from_slice(&whole),
            }
        }
    }

    fn finish_block(&mut self) -> std::io::Result<()> {
        let Some((stream, keep, priority, block)) = self.pending.take() else {
            return Ok(());
        };
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut size = 0usize;
        let mut over = false;
        self.decoder
            .decode_with_cb(&block, |name, value| {
                size = size.saturating_add(name.len() + value.len() + 32);
                if size > MAX_LIST {
                    over = true;
                } else {
                    headers.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|_| bad("a header block does not decode"))?;
        if over {
            return Err(bad("a header list is larger than the server accepts"));
        }
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" {
                *value = b"localhost".to_vec();
            }
        }
        let mut encoded = priority;
        encoded.extend_from_slice(&encode(&headers));
        // HEADERS, then CONTINUATIONs, none over the default frame size.
        let mut chunks = encoded.chunks(MAX_FRAME).peekable();
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let end = if last { END_HEADERS } else { 0 };
            if first {
                frame(&mut self.output, HEADERS, keep | end, stream, chunk);
                first = false;
            } else {
                frame(&mut self.output, CONTINUATION, end, stream, chunk);
            }
        }
        if first {
            frame(&mut self.output, HEADERS, keep | END_HEADERS, stream, &[]);
        }
        Ok(())
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FixAuthority<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut tmp = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    if got.is_empty() {
                        this.eof = true;
                        continue;
                    }
                    this.input.extend_from_slice(got);
                    if this.input.len() > 2 * MAX_BLOCK {
                        return Poll::Ready(Err(bad("the client sent more than it lets be read")));
                    }
                    if let Err(e) = this.process() {
                        return Poll::Ready(Err(e));
                    }
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FixAuthority<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_is_rewritten_and_other_frames_pass() {
        let mut enc = loona_hpack::Encoder::new();
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/SpiffeWorkloadAPI/FetchJWTSVID"),
            (b":authority", b"tmp%2Fw%2Fworkload.sock"),
            (b"workload.spiffe.io", b"true"),
        ];
        let block = enc.encode(headers.iter().copied());
        let mut input = PREFACE.to_vec();
        frame(&mut input, 0x4, 0, 0, &[]); // SETTINGS
        // The block split over HEADERS (padded) and a CONTINUATION.
        let (a, b) = block.split_at(block.len() / 2);
        let mut padded = vec![3u8];
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0, 0, 0]);
        frame(&mut input, HEADERS, PADDED, 1, &padded);
        frame(&mut input, CONTINUATION, END_HEADERS, 1, b);
        frame(&mut input, 0x0, END_STREAM, 1, b"\0\0\0\0\0"); // DATA
        let mut f = FixAuthority::new(());
        for chunk in input.chunks(7) {
            f.input.extend_from_slice(chunk);
            f.process().unwrap();
        }
        let out = f.output;
        assert!(out.starts_with(PREFACE));
        let s = String::from_utf8_lossy(&out);
        assert!(
            s.contains("localhost") && !s.contains("workload.sock"),
            "{s}"
        );
        // Decoded back, the block is the same but for the authority.
        let rest = &out[PREFACE.len() + 9..];
        assert_eq!(rest[3], HEADERS);
        assert_eq!(rest[4] & END_HEADERS, END_HEADERS);
        let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
        let got = loona_hpack::Decoder::new()
            .decode(&rest[9..9 + len])
            .unwrap();
        assert_eq!(got.len(), 5);
        assert!(got.contains(&(b":authority".to_vec(), b"localhost".to_vec())));
        assert!(got.contains(&(b"workload.spiffe.io".to_vec(), b"true".to_vec())));
        assert_eq!(&rest[9 + len + 3], &0u8, "the DATA frame follows unchanged");
    }

    #[test]
    fn a_small_block_cannot_decode_into_a_large_list() {
        // One 4000-byte entry added to the table, then thousands of
        // one-byte references to it (attacker round: 64 KiB in, gigabytes
        // held).
        let mut block = vec![0x40, 0x01, b'x', 0x7f];
        let mut len = Vec::new();
        put_int(&mut len, 0, 7, 4000);
        block.truncate(3);
        block.extend_from_slice(&len);
        block.extend(std::iter::repeat_n(b'a', 4000));
        block.extend(std::iter::repeat_n(0xbe, 50_000));
        let mut f = FixAuthority::new(());
        f.input.extend_from_slice(PREFACE);
        for (i, chunk) in block.chunks(MAX_FRAME).enumerate() {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            let last = (i + 1) * MAX_FRAME >= block.len();
            frame(
                &mut f.input,
                kind,
                if last { END_HEADERS } else { 0 },
                1,
                chunk,
            );
        }
        assert!(f.process().is_err());
        assert!(f.output.len() < 1024, "nothing of it was passed on");
        // A table size update above what the server advertises ends it too.
        let mut f = FixAuthority::new(());
        f.input.extend_from_slice(PREFACE);
        let mut update = Vec::new();
        put_int(&mut update, 0x20, 5, 70_000);
        frame(&mut f.input, HEADERS, END_HEADERS, 1, &update);
        assert!(f.process().is_err());
    }

    proptest::proptest! {
        /// Whatever a local process sends after the preface, the rewriter
        /// neither panics nor passes on more than a bounded amount, and a
        /// well-formed stream of frames it does not rewrite passes through
        /// byte for byte.
        #[test]
        fn arbitrary_input_is_bounded(
            frames in proptest::collection::vec(
                (0u8..12, proptest::bits::u8::ANY, 0u32..8, proptest::collection::vec(proptest::num::u8::ANY, 0..300)),
                0..20,
            ),
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let mut input = PREFACE.to_vec();
            for (kind, flags, stream, payload) in &frames {
                frame(&mut input, *kind, *flags, *stream, payload);
            }
            input.extend_from_slice(&tail);
            let mut f = FixAuthority::new(());
            let mut failed = false;
            for chunk in input.chunks(97) {
                f.input.extend_from_slice(chunk);
                if f.process().is_err() {
                    failed = true;
                    break;
                }
            }
            // Literal re-encoding grows a block by at most its decoded size,
            // which is bounded by MAX_LIST per block.
            proptest::prop_assert!(f.output.len() <= input.len() + frames.len() * (MAX_LIST + 64));
            let plain = frames.iter().all(|(k, _, _, _)| *k != HEADERS && *k != CONTINUATION);
            if plain && !failed {
                // The tail may complete one more frame of its own.
                let whole = input.len() - tail.len();
                proptest::prop_assert!(f.output.len() >= whole);
                proptest::prop_assert_eq!(&f.output[..whole], &input[..whole]);
            }
        }
    }

    #[test]
    fn garbage_ends_the_connection() {
        let mut f = FixAuthority::new(());
        f.input
            .extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(f.process().is_err());
        let mut f = FixAuthority::new(());
        f.input.extend_from_slice(PREFACE);
        frame(
            &mut f.input,
            HEADERS,
            END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff],
        );
        assert!(f.process().is_err());
        let mut f = FixAuthority::new(());
        f.input.extend_from_slice(PREFACE);
        f.input
            .extend_from_slice(&[0xff, 0xff, 0xff, HEADERS, 0, 0, 0, 0, 1]);
        assert!(f.process().is_err());
    }
}
