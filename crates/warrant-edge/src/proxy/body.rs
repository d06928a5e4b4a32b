//! Method overrides carried in a POST body.
//!
//! Frameworks read a `_method` field of a POSTed form as the request's
//! method: Rack (Rails, Sinatra) in urlencoded and multipart forms and in a
//! POST with no content type, Symfony and Laravel in forms (with PHP's
//! spellings of a key) and Laravel in a JSON body too, Express's
//! `method-override` wherever its body parser put one. A POST the rules and
//! policy allowed would then act as the DELETE they forbade, so POST bodies
//! that could carry one are read before anything is forwarded, and a body
//! the edge cannot read (compressed, or a multipart body it cannot parse) is
//! refused rather than passed on unread.

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use std::sync::{Arc, OnceLock};

use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use warrant_core::text::shown;

use super::php_key;
use crate::boundary::repeated;
use crate::refusal::Refusal;
use crate::upstream::uninspectable;

/// How a body could carry form fields.
#[derive(Debug, Default, PartialEq, Eq)]
struct Kinds {
    form: bool,
    json: bool,
    /// The boundary of a multipart body.
    multipart: Option<String>,
}

/// The readings a framework could give a body with these headers.
fn kinds(headers: &HeaderMap) -> Result<Kinds, String> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        // Rack parses a POST without a content type as a form.
        return Ok(Kinds {
            form: true,
            ..Kinds::default()
        });
    };
    let raw = String::from_utf8_lossy(value.as_bytes());
    let value = raw.to_ascii_lowercase();
    let essence = value.split(';').next().unwrap_or("").trim();
    let mut k = Kinds {
        // PHP compares the type's start; an empty type is none.
        form: essence.is_empty() || essence.starts_with("application/x-www-form-urlencoded"),
        // Laravel reads a body as JSON when the header says `json` anywhere.
        json: value.contains("json"),
        multipart: None,
    };
    // Express's body parsers decode UTF-16 and other charsets before they
    // look for a field; the edge reads UTF-8 (and its ASCII subsets).
    if k.form || k.json || essence.starts_with("multipart/") {
        let charsets: Vec<&str> = value
            .split(';')
            .skip(1)
            .filter_map(|p| p.split_once('='))
            .filter(|(k, _)| k.trim() == "charset")
            .map(|(_, v)| v.trim().trim_matches('"'))
            .collect();
        if charsets.len() > 1
            || charsets.iter().any(|c| {
                !matches!(
                    *c,
                    "utf-8" | "utf8" | "us-ascii" | "ascii" | "iso-8859-1" | "latin1"
                )
            })
        {
            return Err(
                "a form or JSON body is read for a method override in UTF-8 only; send `charset=utf-8` (or none)"
                    .into(),
            );
        }
    }
    if essence.starts_with("multipart/") {
        // The boundary keeps its case.
        let params: Vec<&str> = raw
            .split(';')
            .skip(1)
            .filter_map(|p| p.split_once('='))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
            .map(|(_, v)| v.trim().trim_matches('"'))
            .collect();
        match params[..] {
            [b] if !b.is_empty() => k.multipart = Some(b.to_owned()),
            _ => return Err("a multipart body needs exactly one `boundary` parameter".into()),
        }
    }
    Ok(k)
}

/// Whether a field name is read as `_method` by some framework: as PHP
/// stores it, or any of its bracketed parts (`qs` and Rack read
/// `[_method]` as `_method`).
pub(crate) fn is_override(name: &str) -> bool {
    // `_method` at the start of any part, in the key as sent or as PHP
    // stores it: after a bracket, open or not (Rack 2 reads `[_method` as
    // `_method`), a dot, a space, or another `_` (PHP makes `[_method`
    // `__method`). `payment_method` is not one.
    [name.to_ascii_lowercase(), php_key(name)].iter().any(|k| {
        k.match_indices("_method")
            .any(|(i, _)| i == 0 || !k.as_bytes()[i - 1].is_ascii_alphanumeric())
    })
}

fn bad(message: String) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, "method_override", message)
}

const OVERRIDE: &str = "a `_method` field in a POST body (in any spelling a framework reads as it) is refused: upstream frameworks read it as another method than the one the edge decides on";

/// Reads a POST body that could carry a method override; the request to
/// forward (its body in memory when it was read), or why it is refused.
pub(crate) async fn without_overrides(
    req: Request<Body>,
    route: &str,
    agent: &str,
    max_bytes: u64,
) -> Result<Request<Body>, Refusal> {
    if req.method() != Method::POST {
        return Ok(req);
    }
    if let Some(h) = repeated(req.headers(), &[header::CONTENT_TYPE]) {
        return Err(bad(format!(
            "`{h}` is sent more than once; send it once, so there is one reading of the body"
        )));
    }
    let kinds = kinds(req.headers()).map_err(bad)?;
    if !kinds.form && !kinds.json && kinds.multipart.is_none() {
        return Ok(req);
    }
    if let Some(coding) = uninspectable(req.headers()) {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "body_encoding",
            format!(
                "a form or JSON body sent with `{}` cannot be read for a method override; send it uncompressed",
                shown(&coding, 40)
            ),
        ));
    }
    let (parts, body) = req.into_parts();
    let budgets = [agent_budget(agent), budget().clone()];
    let (bytes, permits) =
        collect(body, route, max_bytes, &budgets, BUDGET_WAIT, READ_WITHIN).await?;
    // Parsers skip a UTF-8 byte-order mark; one of UTF-16 or UTF-32 means a
    // text the edge does not read.
    let text: &[u8] = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    if [&b"\xFE\xFF"[..], b"\xFF\xFE", b"\x00\x00\xFE\xFF"]
        .iter()
        .any(|bom| text.starts_with(bom))
    {
        return Err(bad(
            "a form or JSON body in UTF-16 or UTF-32 is not read for a method override; send UTF-8"
                .into(),
        ));
    }
    if kinds.form && form_overrides(text) {
        return Err(bad(OVERRIDE.into()));
    }
    if kinds.json && json_overrides(text) {
        return Err(bad(OVERRIDE.into()));
    }
    if let Some(boundary) = kinds.multipart {
        match multipart_overrides(bytes.clone(), boundary).await {
            Ok(false) => {}
            Ok(true) => return Err(bad(OVERRIDE.into())),
            Err(why) => {
                return Err(bad(format!(
                    "the multipart body cannot be read ({why}); the upstream could read fields in it the edge did not"
                )));
            }
        }
    }
    Ok(Request::from_parts(
        parts,
        Body::new(Held {
            inner: http_body_util::Full::new(bytes),
            _permits: permits,
        }),
    ))
}

/// Reads the whole body into memory (within the route's limit and the
/// shared budgets), for a request bound to its body: the request to
/// forward with those same bytes, and the bytes.
pub(crate) async fn buffered(
    req: Request<Body>,
    route: &str,
    agent: &str,
    max_bytes: u64,
) -> Result<(Request<Body>, Bytes), Refusal> {
    let (parts, body) = req.into_parts();
    let budgets = [agent_budget(agent), budget().clone()];
    let (bytes, permits) =
        collect(body, route, max_bytes, &budgets, BUDGET_WAIT, READ_WITHIN).await?;
    Ok((
        Request::from_parts(
            parts,
            Body::new(Held {
                inner: http_body_util::Full::new(bytes.clone()),
                _permits: permits,
            }),
        ),
        bytes,
    ))
}

/// The most bytes of POST bodies read into memory at once, over every
/// request: what one agent with a POST route can make the broker hold.
const BUDGET_KIB: u32 = 256 * 1024;

/// How long reading a body into memory may take.
const READ_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a body waits for room in the budget before it is refused.
const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn budget() -> &'static Arc<Semaphore> {
    static BUDGET: OnceLock<Arc<Semaphore>> = OnceLock::new();
    BUDGET.get_or_init(|| Arc::new(Semaphore::new(BUDGET_KIB as usize)))
}

/// The most of the budget one agent (all its instances) may hold: a
/// quarter, so one agent cannot keep others' bodies waiting.
const AGENT_KIB: u32 = BUDGET_KIB / 4;

/// One agent's share of the budget.
fn agent_budget(agent: &str) -> Arc<Semaphore> {
    use parking_lot::Mutex;
    use std::collections::HashMap;
    static SHARES: OnceLock<Mutex<HashMap<String, Arc<Semaphore>>>> = OnceLock::new();
    let shares = SHARES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut m = shares.lock();
    // Agents come from the inventory; forget idle shares now and then.
    if m.len() > 4096 {
        m.retain(|_, s| s.available_permits() < AGENT_KIB as usize);
    }
    m.entry(agent.to_owned())
        .or_insert_with(|| Arc::new(Semaphore::new(AGENT_KIB as usize)))
        .clone()
}

/// Reads a body into memory within the route's limit, holding its size in
/// every one of `budgets` (KiB) until the body is dropped.
async fn collect(
    body: Body,
    route: &str,
    max_bytes: u64,
    budgets: &[Arc<Semaphore>],
    wait: std::time::Duration,
    read_within: std::time::Duration,
) -> Result<(Bytes, Vec<OwnedSemaphorePermit>), Refusal> {
    let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    let mut body = http_body_util::Limited::new(body, limit);
    let mut buf = bytes::BytesMut::new();
    let mut permits: Vec<OwnedSemaphorePermit> = Vec::new();
    let mut held_kib: usize = 0;
    let deadline = tokio::time::Instant::now() + wait;
    // A body held in memory is read in bounded time, so a slow upload
    // cannot keep its share of the budget.
    let read_by = tokio::time::Instant::now() + read_within;
    loop {
        let Ok(frame) = tokio::time::timeout_at(read_by, body.frame()).await else {
            return Err(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "a form or JSON body is read before it is forwarded, within {} s; this one took longer",
                    read_within.as_secs()
                ),
            ));
        };
        let Some(frame) = frame else { break };
        let frame = match frame {
            Ok(f) => f,
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!(
                        "the request body is over the {max_bytes} bytes route `{route}` accepts; the upload was cut off"
                    ),
                ));
            }
            Err(_) => return Err(bad("the request body could not be read".into())),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let need = (buf.len() + data.len())
            .div_ceil(1024)
            .saturating_sub(held_kib);
        if need > 0 {
            let more = u32::try_from(need).unwrap_or(u32::MAX);
            for (i, budget) in budgets.iter().enumerate() {
                let got =
                    tokio::time::timeout_at(deadline, budget.clone().acquire_many_owned(more))
                        .await;
                match got {
                    Ok(Ok(p)) => match permits.get_mut(i) {
                        Some(held) => held.merge(p),
                        None => permits.push(p),
                    },
                    _ => {
                        return Err(Refusal::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "busy",
                            "the edge is reading too many request bodies at once (of this agent's, or in all); try again shortly"
                                .into(),
                        ));
                    }
                }
            }
            held_kib += need;
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf.freeze(), permits))
}

/// A body read into memory, holding its share of the budget until sent.
struct Held {
    inner: http_body_util::Full<Bytes>,
    _permits: Vec<OwnedSemaphorePermit>,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether an urlencoded body names `_method` (pairs split at `&` and, as
/// some parsers do, `;`).
fn form_overrides(body: &[u8]) -> bool {
    body.split(|&b| b == b'&' || b == b';').any(|pair| {
        url::form_urlencoded::parse(pair)
            .next()
            .is_some_and(|(k, _)| is_override(&k))
    })
}

/// Whether a JSON body's top-level object has a `_method` key (any number
/// of times, however escaped).
fn json_overrides(body: &[u8]) -> bool {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};

    struct TopKeys;
    impl<'de> Visitor<'de> for TopKeys {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut found = false;
            while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                found |= is_override(&k);
                map.next_value::<IgnoredAny>()?;
            }
            Ok(found)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(false)
        }
        fn visit_str<E>(self, _: &str) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_unit<E>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    match de.deserialize_any(TopKeys) {
        Ok(found) => found,
        // A body that is not JSON carries no JSON field, unless another
        // parser reads more of it (nested deeper than 128, or laxer): then
        // anything that could spell `method` counts.
        Err(_) => {
            let lower = body.to_ascii_lowercase();
            lower.windows(6).any(|w| w == b"method") || lower.windows(2).any(|w| w == b"\\u")
        }
    }
}

/// Whether a multipart body has a field named `_method`, by the name its
/// parser reads or by any `name` parameter of its `Content-Disposition`.
async fn multipart_overrides(body: Bytes, boundary: String) -> Result<bool, String> {
    // Parsers differ at the edges (line endings, folding, preambles), so
    // anything in the body that reads as a `name` parameter counts too.
    if raw_name_params(&body).any(|v| is_override(&v) || is_override(&percent_decode(&v))) {
        return Ok(true);
    }
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    loop {
        let field = match parts.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(false),
            Err(e) => return Err(shown(&e.to_string(), 120)),
        };
        if field.name().is_some_and(is_override) {
            return Ok(true);
        }
        for cd in field.headers().get_all(header::CONTENT_DISPOSITION) {
            let cd = String::from_utf8_lossy(cd.as_bytes());
            // Every segment, so a `;` inside quotes only adds segments.
            for param in cd.split(';') {
                let Some((k, v)) = param.split_once('=') else {
                    continue;
                };
                let k = k.trim().trim_end_matches('*').to_ascii_lowercase();
                if k != "name" {
                    continue;
                }
                let v = v.trim().trim_matches('"');
                // RFC 5987 `charset'lang'value`, percent-encoded.
                let v = v.rsplit('\'').next().unwrap_or(v);
                let decoded = percent_decode(v);
                if is_override(v) || is_override(&decoded) {
                    return Ok(true);
                }
            }
        }
    }
}

/// Every value in `body` that follows `name=` or `name*=` (any case,
/// spaces around `=`), quoted or up to `;`, a line end or a quote.
fn raw_name_params(body: &[u8]) -> impl Iterator<Item = String> + '_ {
    let lower = body.to_ascii_lowercase();
    let mut at = 0;
    std::iter::from_fn(move || {
        while let Some(i) = find(&lower[at..], b"name") {
            let start = at + i + 4;
            at = start;
            // `name`, not the end of `filename`.
            if (at - 4)
                .checked_sub(1)
                .and_then(|p| lower.get(p))
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
            {
                continue;
            }
            let mut j = start;
            if lower.get(j) == Some(&b'*') {
                j += 1;
            }
            while lower.get(j).is_some_and(|b| *b == b' ' || *b == b'\t') {
                j += 1;
            }
            if lower.get(j) != Some(&b'=') {
                continue;
            }
            j += 1;
            while lower
                .get(j)
                .is_some_and(|b| *b == b' ' || *b == b'\t' || *b == b'"')
            {
                j += 1;
            }
            let end = body[j..]
                .iter()
                .position(|b| matches!(b, b'"' | b';' | b'\r' | b'\n'))
                .map_or(body.len(), |k| j + k);
            let v = String::from_utf8_lossy(&body[j..end]);
            // RFC 5987 `charset'lang'value`.
            return Some(v.rsplit('\'').next().unwrap_or_default().to_owned());
        }
        None
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn percent_decode(v: &str) -> String {
    url::form_urlencoded::parse(format!("k={}", v.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_in_every_spelling_are_found() {
        for body in [
            &b"_method=DELETE"[..],
            b"a=1&_METHOD=DELETE",
            b"a=1;_method=DELETE",
            b"%5Fmethod=DELETE",
            b".method=DELETE",
            b"+_method=DELETE",
            b"%20_method=DELETE",
            b"[method=DELETE",
            b"_method[]=DELETE",
            b"_method",
            // Found in the sixth round: qs (Express) and Rack read these as
            // `_method`.
            b"[_method]=DELETE",
            b"%5B_method%5D=DELETE",
            b"a=1&[_method]=DELETE",
            b"[%5Fmethod][]=DELETE",
            b"]_method=DELETE",
            b"a[_method]=DELETE",
            // Found in the seventh round: Rack 2 reads an unclosed bracket
            // before `_method` as nothing.
            b"[_method=DELETE",
            b"[[_method=DELETE",
            b"][_method=DELETE",
            b"%5B_method=DELETE",
        ] {
            assert!(form_overrides(body), "{}", String::from_utf8_lossy(body));
        }
        for body in [&b"a=1&b=2"[..], b"method=x", b"x_method=1", b""] {
            assert!(!form_overrides(body), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn json_keys_however_escaped_are_found() {
        for body in [
            r#"{"_method":"DELETE"}"#,
            r#"{"a":{"b":[1,2]},"_method":"DELETE"}"#,
            r#"{"\u005fmethod":"DELETE"}"#,
            r#"{"_\u006Dethod":"DELETE"}"#,
            r#"{"_method":"GET","_method":"DELETE"}"#,
        ] {
            assert!(json_overrides(body.as_bytes()), "{body}");
        }
        for body in [
            r#"{"model":"m","messages":[{"_method":"x"}]}"#,
            r#"[{"_method":"DELETE"}]"#,
            r#""_method""#,
            "not json",
            "",
        ] {
            assert!(!json_overrides(body.as_bytes()), "{body}");
        }
        // What serde_json cannot read but JSON.parse can (nesting past 128).
        let deep = format!(
            r#"{{"a":{}{},"_method":"DELETE"}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(json_overrides(deep.as_bytes()));
        let deep = format!(
            r#"{{"a":{}{},"\u005fmethod":1}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(json_overrides(deep.as_bytes()));
    }

    fn multipart(disposition: &str) -> Bytes {
        Bytes::from(format!(
            "--XB\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XB\r\nContent-Disposition: {disposition}\r\n\r\nDELETE\r\n--XB--\r\n"
        ))
    }

    #[tokio::test]
    async fn multipart_fields_in_every_spelling_are_found() {
        for cd in [
            "form-data; name=\"_method\"",
            "form-data; name=_METHOD",
            "form-data; name=\".method\"",
            "form-data; name=\"x\"; name=\"_method\"",
            "form-data; name*=utf-8''%5Fmethod",
            "form-data; filename=\"a.txt\"; name=\"_method[]\"",
        ] {
            let found = multipart_overrides(multipart(cd), "XB".into()).await;
            assert_eq!(found, Ok(true), "{cd}");
        }
        for cd in [
            "form-data; name=\"payment_method\"",
            "form-data; name=\"file\"; filename=\"_method.txt\"",
        ] {
            let found = multipart_overrides(multipart(cd), "XB".into()).await;
            assert_eq!(found, Ok(false), "{cd}");
        }
        // Whatever a parser makes of it, a `name` parameter anywhere counts.
        let lf = Bytes::from_static(
            b"--XB\nContent-Disposition: form-data; name = \"_method\"\n\nDELETE\n--XB--\n",
        );
        assert_eq!(multipart_overrides(lf, "XB".into()).await, Ok(true));
        let cut =
            Bytes::from_static(b"--XB\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1");
        assert!(multipart_overrides(cut, "XB".into()).await.is_err());
    }

    /// Bodies read into memory share one budget: past it, a body waits,
    /// then is refused, and the room comes back when a body is dropped.
    #[tokio::test]
    async fn bodies_read_into_memory_share_a_budget() {
        let budget = Arc::new(Semaphore::new(8));
        let wait = std::time::Duration::from_millis(200);
        let body = |n: usize| Body::from(vec![b'a'; n]);
        let (first, p1) = collect(
            body(6 * 1024),
            "r",
            1 << 20,
            std::slice::from_ref(&budget),
            wait,
            wait,
        )
        .await
        .unwrap();
        assert_eq!(first.len(), 6 * 1024);
        assert_eq!(budget.available_permits(), 2);
        let e = collect(
            body(3 * 1024),
            "r",
            1 << 20,
            std::slice::from_ref(&budget),
            wait,
            wait,
        )
        .await
        .unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            budget.available_permits(),
            2,
            "a refused body holds nothing"
        );
        drop(p1);
        let (_, p2) = collect(
            body(3 * 1024),
            "r",
            1 << 20,
            std::slice::from_ref(&budget),
            wait,
            wait,
        )
        .await
        .unwrap();
        assert_eq!(budget.available_permits(), 5);
        drop(p2);
        let e = collect(
            body(2048),
            "r",
            1024,
            std::slice::from_ref(&budget),
            wait,
            wait,
        )
        .await
        .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(budget.available_permits(), 8);
        // A slow upload gives its share back when its time is up.
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(1);
        tx.send(Ok(http_body::Frame::data(Bytes::from(vec![b'a'; 4096]))))
            .await
            .unwrap();
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let slow = Body::new(http_body_util::StreamBody::new(stream));
        let e = collect(
            slow,
            "r",
            1 << 20,
            std::slice::from_ref(&budget),
            wait,
            wait,
        )
        .await
        .unwrap_err();
        assert_eq!(e.status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(budget.available_permits(), 8);
        drop(tx);

        // One agent's share: past it, its bodies wait while others' pass.
        let (mine, theirs) = (Arc::new(Semaphore::new(4)), Arc::new(Semaphore::new(4)));
        let both = |a: &Arc<Semaphore>| [a.clone(), budget.clone()];
        let (_, held) = collect(body(4 * 1024), "r", 1 << 20, &both(&mine), wait, wait)
            .await
            .unwrap();
        let e = collect(body(1024), "r", 1 << 20, &both(&mine), wait, wait)
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            budget.available_permits(),
            4,
            "the refused body holds nothing"
        );
        collect(body(2 * 1024), "r", 1 << 20, &both(&theirs), wait, wait)
            .await
            .unwrap();
        drop(held);
        assert_eq!(budget.available_permits(), 8);
        assert_eq!(mine.available_permits(), 4);
    }

    #[test]
    fn content_types_are_read_as_frameworks_read_them() {
        let of = |ct: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(ct) = ct {
                h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            }
            kinds(&h)
        };
        assert!(of(None).unwrap().form);
        assert!(of(Some("")).unwrap().form);
        assert!(
            of(Some("Application/X-WWW-Form-Urlencoded; charset=utf-8"))
                .unwrap()
                .form
        );
        assert!(of(Some("application/x-www-form-urlencodedx")).unwrap().form);
        assert!(of(Some("application/json")).unwrap().json);
        assert!(of(Some("text/plain; x=/json")).unwrap().json);
        assert!(of(Some("application/vnd.api+json")).unwrap().json);
        assert_eq!(
            of(Some("multipart/form-data; boundary=XB"))
                .unwrap()
                .multipart,
            Some("XB".into())
        );
        assert_eq!(
            of(Some("multipart/mixed; boundary=\"XB\""))
                .unwrap()
                .multipart,
            Some("XB".into())
        );
        assert!(of(Some("multipart/form-data; boundary=a; boundary=b")).is_err());
        assert!(of(Some("multipart/form-data")).is_err());
        assert_eq!(of(Some("text/plain")).unwrap(), Kinds::default());
        // Charsets the edge does not read, as Express's parsers do.
        for ct in [
            "application/json; charset=utf-16",
            "application/json; charset=utf-16le",
            "application/x-www-form-urlencoded; charset=utf-32",
            "application/json; charset=utf-8; charset=utf-16",
            "multipart/form-data; boundary=XB; charset=utf-7",
        ] {
            assert!(of(Some(ct)).is_err(), "{ct}");
        }
        assert!(of(Some("application/json; charset=UTF-8")).is_ok());
        assert!(of(Some("text/plain; charset=utf-16")).is_ok());
        assert_eq!(
            of(Some("application/octet-stream")).unwrap(),
            Kinds::default()
        );
    }
}
