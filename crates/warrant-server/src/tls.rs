//! TLS for the API and edge listeners: rustls on aws-lc-rs, HTTP/1.1, the
//! certificate chain and key read from PEM files and read again when they
//! change (a renewed certificate needs no restart; a bad renewal keeps the
//! one in force and says why).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

/// Where the listeners' certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1), readable by its owner only.
    pub key: PathBuf,
}

/// What identifies a file's contents without reading it.
type Stamp = Option<(u64, u64, i64, i64, u64)>;

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
}

/// Reads and checks the pair: the key owner-only, the chain non-empty, the
/// key the one the leaf certifies.
pub fn load(files: &TlsFiles) -> Result<CertifiedKey, String> {
    let meta = std::fs::metadata(&files.key)
        .map_err(|e| format!("cannot read the TLS key `{}`: {e}", files.key.display()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "the TLS key `{}` is readable or writable by others (mode {:o}); make it owner-only (chmod 600)",
            files.key.display(),
            meta.mode() & 0o777
        ));
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| {
            format!(
                "cannot read the TLS certificate `{}`: {e}",
                files.cert.display()
            )
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "the TLS certificate `{}` is not PEM: {e}",
                files.cert.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "the TLS certificate `{}` holds no certificate",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "the TLS key `{}` is not a PEM private key: {e}",
            files.key.display()
        )
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(certs, key, &provider).map_err(|e| {
        format!(
            "the TLS key `{}` does not go with the certificate `{}`: {e}",
            files.key.display(),
            files.cert.display()
        )
    })
}

/// The pair in force, swapped when the files change.
#[derive(Debug)]
struct Reloading {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A TLS acceptor whose certificate follows its files.
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    files: TlsFiles,
    resolver: Arc<Reloading>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

/// How often the files are looked at.
const WATCH_EVERY: Duration = Duration::from_secs(2);

impl Tls {
    /// Loads the pair (refusing a bad one) and builds the acceptor.
    pub fn new(files: TlsFiles) -> Result<Self, String> {
        let resolver = Arc::new(Reloading {
            current: ArcSwap::from_pointee(load(&files)?),
        });
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            files,
            resolver,
        })
    }

    /// The acceptor.
    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files again if they changed; a pair that does not load is
    /// logged and the one in force kept. Returns whether it swapped.
    fn refresh(&self, seen: &mut (Stamp, Stamp)) -> bool {
        let now = (stamp(&self.files.cert), stamp(&self.files.key));
        if now == *seen {
            return false;
        }
        *seen = now;
        match load(&self.files) {
            Ok(k) => {
                self.resolver.current.store(Arc::new(k));
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate changed on disk: now serving the new one");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "the TLS certificate or key changed on disk but does not load; still serving the previous one");
                false
            }
        }
    }

    /// Watches the files until `shutdown`.
    pub fn watch(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut seen = (stamp(&me.files.cert), stamp(&me.files.key));
            let mut every = tokio::time::interval(WATCH_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => { me.refresh(&mut seen); }
                    () = shutdown.cancelled() => break,
                }
            }
        })
    }
}
