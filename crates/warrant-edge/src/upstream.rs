//! The edge's side of an upstream: its origin, the TLS client that reaches
//! it, and what of its answers the edge can inspect.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, header};
use hyper_util::client::legacy::connect::HttpConnector;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

/// An upstream origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The scheme.
    pub scheme: Scheme,
    /// The host as written (a name, an IPv4 address, or `[v6]`).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Origin {
    /// `scheme://host[:port]`, default ports left out.
    pub fn as_url(&self) -> String {
        let s = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{s}://{}", self.authority())
    }

    /// `host[:port]` as a `Host` header says it.
    pub fn authority(&self) -> String {
        let default = match self.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub(crate) fn parse(value: &str, what: &str) -> Result<Self, String> {
        let url = url::Url::parse(value).map_err(|e| {
            format!(
                "{what} `{}` is not a URL ({e})",
                shown_url(value).escape_debug()
            )
        })?;
        let value = &shown_url(value);
        let scheme = match url.scheme() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            _ => return Err(format!("{what} `{value}` must be an https:// URL")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "{what} `{value}` must not carry credentials (a user name or password before `@`); the credential provider supplies them"
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => format!("[{a}]"),
            None => return Err(format!("{what} `{value}` names no host")),
        };
        let port = url.port_or_known_default().unwrap_or(443);
        Ok(Self { scheme, host, port })
    }

    /// Whether the host is a loopback address or `localhost`.
    pub fn is_loopback(&self) -> bool {
        let h = self.host.trim_start_matches('[').trim_end_matches(']');
        h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
    }
}

pub(crate) use warrant_core::text::shown_url;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
pub fn is_hop_by_hop(h: &HeaderName) -> bool {
    matches!(
        h.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    tls_config_with(ca_file, None)
}

fn tls_config_with(
    ca_file: Option<&std::path::Path>,
    identity: Option<&crate::credential::ClientIdentity>,
) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read ca_file `{}`: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    format!("ca_file `{}` is not PEM certificates: {e}", path.display())
                })?;
            if certs.is_empty() {
                return Err(format!("ca_file `{}` holds no certificate", path.display()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("ca_file `{}`: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
        }
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match identity {
        None => Ok(b.with_no_client_auth()),
        Some(i) => b
            .with_client_auth_cert(i.certs.clone(), i.key.clone_key())
            .map_err(|e| format!("the certificate and key do not go together: {e}")),
    }
}

/// An HTTPS connector presenting `identity`'s certificate, trusting
/// `ca_file` (or the system's CAs) for the upstream's.
pub(crate) fn connector_presenting(
    ca_file: Option<&std::path::Path>,
    connect_timeout: Duration,
    identity: &crate::credential::ClientIdentity,
) -> Result<hyper_rustls::HttpsConnector<HttpConnector>, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config_with(ca_file, Some(identity))?)
        .https_only();
    Ok(b.enable_http1().wrap_connector(http))
}

/// An HTTP(S) connector trusting `ca_file`, or the system's CAs.
pub(crate) fn connector(
    https: bool,
    ca_file: Option<&std::path::Path>,
    connect_timeout: Duration,
) -> Result<hyper_rustls::HttpsConnector<HttpConnector>, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let b = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls_config(ca_file)?);
    let b = if https {
        b.https_only()
    } else {
        b.https_or_http()
    };
    Ok(b.enable_http1().wrap_connector(http))
}

/// A content or transfer coding of an answer that the redactor cannot see
/// through (anything but `identity`, and `chunked` for transfer).
pub(crate) fn uninspectable(h: &HeaderMap) -> Option<String> {
    let codings = |name: &HeaderName| -> Vec<String> {
        h.get_all(name)
            .iter()
            .flat_map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    codings(&header::CONTENT_ENCODING)
        .into_iter()
        .find(|c| c != "identity")
        .or_else(|| {
            codings(&header::TRANSFER_ENCODING)
                .into_iter()
                .find(|c| c != "chunked")
        })
}

/// Whether a client error was the request body passing its limit.
pub(crate) fn over_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A credential written into a URL by mistake is never repeated by the
    /// error that refuses it.
    #[test]
    fn errors_never_repeat_a_credential_written_in_a_url() {
        for bad in [
            "https://user:p4ssw0rd@api.example",
            "ftp://user:p4ssw0rd@api.example/x?token=s3cr3t",
            "not a url p4ssw0rd@x?token=s3cr3t",
        ] {
            let e = Origin::parse(bad, "upstream").unwrap_err();
            assert!(!e.contains("p4ssw0rd") && !e.contains("s3cr3t"), "{e}");
        }
        assert_eq!(
            shown_url("http://api.example/?api_key=s3cr3t#frag"),
            "http://api.example/"
        );
        assert_eq!(
            shown_url("https://u:p@h.example:8443/a/b?q=1"),
            "https://[redacted]@h.example:8443/a/b"
        );
    }
}
