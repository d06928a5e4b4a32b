//! The CLI's client for the admin API.
//!
//! By default it connects to `<data-dir>/admin.sock` (the kernel tells the
//! broker who we are; no token needed). With `--url` it speaks HTTP to the API
//! listener and sends `WARRANT_ADMIN_TOKEN` as a bearer token. Errors say what
//! to do: start the broker, fix the data directory, supply a token.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use warrant_core::api::ErrorBody;
use zeroize::Zeroizing;

/// Where the admin API is.
enum Target {
    /// The admin socket, and whether its data directory was named
    /// explicitly (flag, environment or config file) rather than defaulted.
    Socket(PathBuf, bool),
    Http {
        authority: String,
        host_header: String,
        token: Option<Zeroizing<String>>,
        /// With https: the TLS client and the name the certificate must carry.
        tls: Option<(
            tokio_rustls::TlsConnector,
            rustls::pki_types::ServerName<'static>,
        )>,
    },
}

/// A TLS client trusting `ca_file`'s certificates, or the system's roots.
fn tls_connector(ca_file: Option<&Path>) -> anyhow::Result<tokio_rustls::TlsConnector> {
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        tls_config(ca_file)?,
    )))
}

/// The TLS client configuration trusting `ca_file`'s certificates, or the
/// system's roots.
pub fn tls_config(ca_file: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(f) => {
            for c in CertificateDer::pem_file_iter(f)
                .with_context(|| format!("--ca-file `{}` cannot be read", f.display()))?
            {
                let c = c.with_context(|| format!("--ca-file `{}` is not PEM", f.display()))?;
                roots.add(c).with_context(|| {
                    format!(
                        "--ca-file `{}` holds a certificate that cannot be a root",
                        f.display()
                    )
                })?;
            }
            if roots.is_empty() {
                bail!("--ca-file `{}` holds no certificate", f.display());
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// A client for one broker.
pub struct AdminClient {
    target: Target,
}

impl AdminClient {
    /// A client for the broker using `data_dir` (`explicit`: named by the
    /// user, not the default `./warrant-data`), or at `url` if given.
    pub fn new(
        data_dir: &Path,
        explicit: bool,
        url: Option<&str>,
        ca_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let target = match url {
            None => Target::Socket(
                warrant_server::data_dir::admin_socket_path(data_dir),
                explicit,
            ),
            Some(u) => {
                // Never echoed whole: a URL may carry credentials.
                let shown = warrant_core::text::shown_url(u);
                let parsed =
                    url::Url::parse(u).with_context(|| format!("--url `{shown}` is not a URL"))?;
                if parsed.scheme() != "http" && parsed.scheme() != "https" {
                    bail!("--url `{shown}`: use an http:// or https:// URL");
                }
                let host = parsed
                    .host_str()
                    .ok_or_else(|| anyhow!("--url `{shown}` has no host"))?;
                let tls = if parsed.scheme() == "https" {
                    let name = rustls::pki_types::ServerName::try_from(
                        host.trim_start_matches('[')
                            .trim_end_matches(']')
                            .to_owned(),
                    )
                    .with_context(|| {
                        format!("--url `{shown}`: `{host}` is not a TLS server name")
                    })?;
                    Some((tls_connector(ca_file)?, name))
                } else {
                    if ca_file.is_some() {
                        bail!("--ca-file is for an https:// --url");
                    }
                    // The admin token would cross the network in the clear.
                    let loopback = match parsed.host() {
                        Some(url::Host::Ipv4(a)) => a.is_loopback(),
                        Some(url::Host::Ipv6(a)) => a.is_loopback(),
                        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                        None => false,
                    };
                    if !loopback {
                        bail!(
                            "--url `{shown}`: plain http:// is for a broker on this machine (loopback); use https:// so the admin token does not cross the network in the clear"
                        );
                    }
                    None
                };
                let port = parsed.port_or_known_default().unwrap_or(80);
                let host_header = match parsed.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host.to_owned(),
                };
                let token = std::env::var("WARRANT_ADMIN_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty())
                    .map(Zeroizing::new);
                Target::Http {
                    authority: format!("{host}:{port}"),
                    host_header,
                    token,
                    tls,
                }
            }
        };
        Ok(Self { target })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/admin/v1{path}"));
        req = match &self.target {
            Target::Socket(..) => req.header("host", "localhost"),
            Target::Http {
                host_header, token, ..
            } => {
                let r = req.header("host", host_header.as_str());
                match token {
                    Some(t) => r.header("authorization", format!("Bearer {}", t.as_str())),
                    None => r,
                }
            }
        };
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .context("building the request")?;
        let resp = match &self.target {
            Target::Socket(path, explicit) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| socket_error(path, &e))?;
                trust_server(&stream, path, *explicit)?;
                roundtrip(stream, req).await?
            }
            Target::Http { authority, tls, .. } => {
                let stream = tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .with_context(|| format!("cannot reach the broker at {authority}; is `warrant serve` listening there?"))?;
                match tls {
                    None => roundtrip(stream, req).await?,
                    Some((connector, name)) => {
                        let stream = connector
                            .connect(name.clone(), stream)
                            .await
                            .with_context(|| format!("TLS with the broker at {authority} failed (is its certificate for this name, and signed by a CA you trust? see --ca-file)"))?;
                        roundtrip(stream, req).await?
                    }
                }
            }
        };
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("reading the broker's answer")?
            .to_bytes();
        Ok((status, bytes))
    }

    /// Sends a request and decodes a JSON answer, or returns the API's error.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let body = body.map(serde_json::to_vec).transpose()?;
        let (status, bytes) = self.send(method, path, body).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).with_context(|| format!("the broker's answer to {path} is not what this CLI expects (is it the same version?)"));
        }
        let err: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
            error: "unknown".into(),
            message: format!(
                "the broker answered {status}: {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ),
        });
        let mut message = err.message;
        if status == StatusCode::UNAUTHORIZED
            && matches!(&self.target, Target::Http { token: None, .. })
        {
            message.push_str("; set WARRANT_ADMIN_TOKEN (create one with `warrant admin-token create --role ...` on the broker's host)");
        }
        Err(ApiFailure {
            status: status.as_u16(),
            code: err.error,
            message,
        }
        .into())
    }

    /// GET a JSON resource.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// POST JSON.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// DELETE a resource.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::DELETE, path, None::<&()>).await
    }
}

/// Whether the process serving the admin socket may be told secrets and
/// believed: run by this user or root; or, for a data directory the user
/// named by an absolute path, by the user who owns that directory, if no
/// one else may write to it. A socket in a defaulted `./warrant-data` served by someone else is
/// refused: anyone can plant one in a directory the user happens to be in.
fn trust_server(
    stream: &tokio::net::UnixStream,
    path: &Path,
    explicit: bool,
) -> anyhow::Result<()> {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::MetadataExt as _;
    let server = rustix::net::sockopt::socket_peercred(stream.as_fd())
        .map_err(|e| anyhow!("cannot tell who serves `{}`: {e}", path.display()))?
        .uid
        .as_raw();
    let me = rustix::process::geteuid().as_raw();
    if server == me || server == 0 {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let m = std::fs::metadata(dir).with_context(|| format!("reading `{}`", dir.display()))?;
    if !explicit {
        bail!(
            "the admin socket `{}` is served by uid {server}, not by you or root; a broker run by another user is trusted only when its data directory is named by an absolute path (--data-dir, WARRANT_DATA_DIR or the config file's data_dir), so a socket planted in the current directory is never told anything",
            path.display()
        );
    }
    if m.uid() != server || m.mode() & 0o022 != 0 {
        bail!(
            "the admin socket `{}` is served by uid {server}, but its data directory is owned by uid {} or writable by others (mode {:o}); the broker's own data directory never is, so this one is not trusted",
            path.display(),
            m.uid(),
            m.mode() & 0o7777
        );
    }
    Ok(())
}

/// No broker is listening on the admin socket (as opposed to one that
/// answered with an error).
#[derive(Debug)]
pub struct NoBroker(String);

impl std::fmt::Display for NoBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoBroker {}

/// The broker refused or failed a request: its HTTP status, machine-readable
/// code and message (`--output json` prints all three).
#[derive(Debug)]
pub struct ApiFailure {
    /// The HTTP status.
    pub status: u16,
    /// The broker's error code (`not_found`, `invalid_request`, ...).
    pub code: String,
    /// What happened and what to do.
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiFailure {}

fn socket_error(path: &Path, e: &std::io::Error) -> anyhow::Error {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        return NoBroker(format!(
            "the data directory `{}` does not exist; name the one `warrant serve` uses with --data-dir or WARRANT_DATA_DIR, or use --url with WARRANT_ADMIN_TOKEN",
            dir.display()
        ))
        .into();
    }
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => NoBroker(format!(
            "cannot reach the broker: no admin socket at `{}`; start it with `warrant serve` (using the same --data-dir / WARRANT_DATA_DIR), or use --url with WARRANT_ADMIN_TOKEN",
            path.display()
        ))
        .into(),
        std::io::ErrorKind::PermissionDenied => anyhow!(
            "permission denied on `{}`: the admin socket is for the user running the broker; run as that user, or use --url with WARRANT_ADMIN_TOKEN",
            path.display()
        ),
        _ => anyhow!(
            "cannot connect to the admin socket `{}`: {e}",
            path.display()
        ),
    }
}

async fn roundtrip<S>(
    stream: S,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("talking HTTP to the broker")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .context("the broker closed the connection")
}

/// Percent-encodes a path segment (agent names are slugs, but user input may not be).
pub fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
