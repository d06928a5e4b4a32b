//! What the broker's own outbound HTTP (approval and anomaly webhooks, the
//! HTTP audit export) shares: one client, the rule on where plain HTTP may
//! go, and how a failure is told.

use std::sync::OnceLock;

use hyper_util::client::legacy::Client as Legacy;
use hyper_util::client::legacy::connect::HttpConnector;

/// The client: HTTPS with the system's roots, or plain HTTP (which
/// [`check_destination`] keeps to loopback).
pub type Client =
    Legacy<hyper_rustls::HttpsConnector<HttpConnector>, http_body_util::Full<hyper::body::Bytes>>;

/// The one client, built on first use; `None` when the system's root
/// certificates cannot be loaded (logged once).
pub fn client() -> Option<Client> {
    static CLIENT: OnceLock<Option<Client>> = OnceLock::new();
    CLIENT
        .get_or_init(|| match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(b) => Some(
                Legacy::builder(hyper_util::rt::TokioExecutor::new())
                    .build(b.https_or_http().enable_http1().build()),
            ),
            Err(e) => {
                tracing::error!(error = %e, "cannot load the system's root certificates; webhooks and HTTP audit export are off");
                None
            }
        })
        .clone()
}

/// Whether `url` may carry what it is for (`what`, told in the error):
/// `https://`, or `http://` to a loopback address only.
pub fn check_destination(url: &url::Url, what: &str) -> Result<(), String> {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!(
            "`{}` is plain http beyond loopback: {what} would travel in the clear; use https",
            url.host_str().unwrap_or_default()
        )),
        s => Err(format!("the URL's scheme `{s}` is not http or https")),
    }
}

/// An error with every cause it wraps, `a: b: c` (hyper's top-level
/// errors say little alone).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut why = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        why.push_str(&format!(": {s}"));
        source = s.source();
    }
    why
}
