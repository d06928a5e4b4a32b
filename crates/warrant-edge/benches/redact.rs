//! Response redaction throughput: what the proxy does to every byte an
//! upstream sends back when a credential was injected.
//!
//! Three 4 MiB bodies (JSON text like a model's answer; form- and
//! percent-encoded text, dense in the bytes that may start an escaped
//! spelling; a base64 blob, dense in the bytes that may start a base64
//! spelling), each in 16 KiB chunks (a download) and 64-byte chunks
//! (server-sent tokens). The baseline is the same chunks copied through
//! with nothing to redact, in the same run. Run with
//! `cargo bench -p warrant-server --bench redact`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Instant;

use base64::Engine as _;
use warrant_edge::redact::Redactor;

const SIZE: usize = 4 << 20;
const SECRET: &[u8] = b"sk-proj-4f9a1c2e7b5d8a0f3e6c9b2d";

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

fn json_text(rng: &mut Rng) -> Vec<u8> {
    let words = [
        "the",
        "model",
        "answer",
        "is",
        "\\n",
        "\\\"quoted\\\"",
        "sk-",
        "token",
        "s",
        "key",
        "data:",
        "%",
        "&amp;",
        "=",
        "1234",
        "\\u00e9t\\u00e9",
    ];
    let mut out = br#"{"choices":[{"message":{"content":""#.to_vec();
    while out.len() < SIZE {
        out.extend_from_slice(rng.pick(&words).as_bytes());
        out.push(b' ');
    }
    out
}

fn form_text(rng: &mut Rng) -> Vec<u8> {
    let parts = [
        "a=1&",
        "q=%2Fpath%2Fto&",
        "name=s%6B&",
        "x=%3D%3D&",
        "&#115;&#107;",
        "=3D",
        "sk=",
        "%73",
        "\\u0073",
    ];
    let mut out = Vec::new();
    while out.len() < SIZE {
        out.extend_from_slice(rng.pick(&parts).as_bytes());
    }
    out
}

fn base64_blob(rng: &mut Rng) -> Vec<u8> {
    let raw: Vec<u8> = (0..SIZE * 3 / 4).map(|_| rng.next() as u8).collect();
    base64::engine::general_purpose::STANDARD
        .encode(raw)
        .into_bytes()
}

/// MiB/s through the redactor (or a plain copy when `values` is empty),
/// the best of five passes.
fn measure(body: &[u8], chunk: usize, values: &[&[u8]]) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let mut r = Redactor::new(values.iter().map(|v| v.to_vec()).collect());
        let t = Instant::now();
        let mut n = 0;
        for c in body.chunks(chunk) {
            n += black_box(r.push(c)).len();
        }
        n += r.finish().len();
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(n, body.len(), "nothing to redact, so nothing changes");
        best = best.min(secs);
    }
    body.len() as f64 / f64::from(1 << 20) / best
}

fn main() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let bodies = [
        ("json text", json_text(&mut rng)),
        ("escapes only", form_text(&mut rng)),
        ("base64 blob", base64_blob(&mut rng)),
    ];
    let four: [&[u8]; 4] = [
        SECRET,
        b"ghp_0123456789abcdefABCDEF0123456789abcd",
        b"Basic dXNlcjpwYXNzd29yZA==",
        b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJl",
    ];
    // Building a redactor: once per proxied request with a credential.
    for (label, values) in [("1 secret", &four[..1]), ("4 secrets", &four[..])] {
        let n = 200;
        let t = Instant::now();
        for _ in 0..n {
            black_box(Redactor::new(values.iter().map(|v| v.to_vec()).collect()));
        }
        println!(
            "building a redactor for {label}: {:.1} µs",
            t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
        );
    }
    println!(
        "| body | chunk | copy MiB/s | 1 secret MiB/s | vs copy | 4 secrets MiB/s | vs copy |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, body) in &bodies {
        for chunk in [16 << 10, 64] {
            let copy = measure(body, chunk, &[]);
            let one = measure(body, chunk, &[SECRET]);
            let many = measure(body, chunk, &four);
            println!(
                "| {name} | {chunk} B | {copy:.0} | {one:.0} | {:.3}x | {many:.0} | {:.3}x |",
                one / copy,
                many / copy
            );
        }
    }
}
