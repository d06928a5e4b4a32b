//! Serving HTTP/1.1 on each listener, within limits.
//!
//! Every listener (API, edge, admin socket, agent socket) runs its own
//! accept loop with its own cap on open connections, so no flood of one
//! starves another: with the edge full, the admin socket and `/readyz` still
//! answer. Past the cap, a new connection is accepted and closed at once
//! (counted in `warrant_connections_refused_total`), so the kernel's backlog
//! never fills with connections nobody will serve. Each connection must send
//! a complete request head within `header_timeout`, which is also how long
//! an idle keep-alive connection is kept; on the API, admin and agent
//! listeners each request must be answered within `request_timeout` (the
//! edge's requests are bounded by their route's or MCP server's timeouts,
//! since answers stream). At start the broker raises its open-file limit to
//! the hard limit and checks that the caps fit in it.
//!
//! What this is not: a defence against a flood bigger than the host's
//! network stack; put a load balancer with connection limits in front of a
//! broker exposed beyond loopback.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use warrant_control::metrics::Metrics;

/// Limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections at most per peer user (Unix sockets: the uid the
    /// kernel gives), so one local user cannot fill a socket every user
    /// needs. `None`: no such cap.
    pub per_user: Option<usize>,
    /// To send a request head, and how long an idle connection is kept.
    pub header_timeout: Duration,
    /// To answer a request (`None`: the handler bounds it).
    pub request_timeout: Option<Duration>,
}

/// Adds what a connection knows of its peer to each request on it.
pub trait PeerInfo: Clone + Send + Sync + 'static {
    /// Inserts the peer into the request's extensions.
    fn insert(&self, req: &mut Request<Body>);
}

impl<T: Clone + Send + Sync + 'static> PeerInfo for axum::extract::ConnectInfo<T> {
    fn insert(&self, req: &mut Request<Body>) {
        req.extensions_mut().insert(self.clone());
    }
}

/// One listener's accept loop, its connections and their shutdown.
pub struct Server {
    name: &'static str,
    app: Router,
    limits: Limits,
    permits: Arc<tokio::sync::Semaphore>,
    /// TLS handshakes in progress (as many as connections, at most).
    handshakes: Arc<tokio::sync::Semaphore>,
    /// Open connections per peer uid (with `limits.per_user`).
    users: Arc<parking_lot::Mutex<std::collections::HashMap<u32, usize>>>,
    graceful: GracefulShutdown,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server for `app` named `name` (for metrics and logs).
    pub fn new(name: &'static str, app: Router, limits: Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            name,
            permits: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
            handshakes: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
            users: Arc::default(),
            app,
            limits,
            graceful: GracefulShutdown::new(),
            metrics,
        }
    }

    /// Serves one accepted connection, if the caps allow (the listener's,
    /// and the per-user one for a peer of user `uid`); otherwise closes it
    /// at once.
    pub fn connection<I, P>(&self, io: I, peer: P, uid: Option<u32>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        P: PeerInfo,
    {
        let user = match (uid, self.limits.per_user) {
            (Some(uid), Some(max)) => {
                let mut users = self.users.lock();
                let open = users.entry(uid).or_default();
                if *open >= max {
                    drop(users);
                    self.metrics.connection_refused(self.name);
                    drop(io);
                    return;
                }
                *open += 1;
                Some(UserSlot {
                    users: self.users.clone(),
                    uid,
                })
            }
            _ => None,
        };
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.metrics.connection_refused(self.name);
            drop(io);
            return;
        };
        let app = self.app.clone();
        let timeout = self.limits.request_timeout;
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            let peer = peer.clone();
            async move {
                let mut req = req.map(Body::new);
                peer.insert(&mut req);
                let answer = app.oneshot(req);
                let resp = match timeout {
                    None => answer.await,
                    Some(t) => match tokio::time::timeout(t, answer).await {
                        Ok(r) => r,
                        Err(_) => Ok(timed_out()),
                    },
                };
                Ok::<_, Infallible>(resp.unwrap_or_else(|e| match e {}))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .keep_alive(true);
        let conn = builder.serve_connection(TokioIo::new(io), svc);
        let conn = self.graceful.watch(conn);
        let name = self.name;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(listener = name, error = %e, "connection ended with an error");
            }
            drop(permit);
            drop(user);
        });
    }

    /// Lets open connections finish their requests, for at most `within`.
    pub async fn drain(self, within: Duration) {
        if tokio::time::timeout(within, self.graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                listener = self.name,
                "connections still open after the drain; closing anyway"
            );
        }
    }
}

/// One open connection of a user, counted until it closes.
struct UserSlot {
    users: Arc<parking_lot::Mutex<std::collections::HashMap<u32, usize>>>,
    uid: u32,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut users = self.users.lock();
        if let Some(n) = users.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                users.remove(&self.uid);
            }
        }
    }
}

fn timed_out() -> axum::response::Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({
            "error": "timeout",
            "message": "the broker did not answer this request in time; try again",
        })),
    )
        .into_response()
}

/// Accepts on `listener` until `shutdown`, handing each connection and its
/// peer (from `peer`) to `server`.
pub async fn run_tcp(
    server: &Arc<Server>,
    listener: tokio::net::TcpListener,
    tls: Option<crate::tls::Tls>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((io, addr)) => {
                    let _ = io.set_nodelay(true);
                    match &tls {
                        None => server.connection(io, axum::extract::ConnectInfo(addr), None),
                        Some(tls) => handshake(server, tls, io, addr),
                    }
                }
                Err(e) => accept_failed(server.name, &e).await,
            },
        }
    }
}

/// Completes a TLS handshake (within the header timeout, at most as many at
/// once as the listener has connections), then serves the connection.
fn handshake(
    server: &Arc<Server>,
    tls: &crate::tls::Tls,
    io: tokio::net::TcpStream,
    addr: std::net::SocketAddr,
) {
    let Ok(permit) = server.handshakes.clone().try_acquire_owned() else {
        server.metrics.connection_refused(server.name);
        return;
    };
    let (server, acceptor) = (server.clone(), tls.acceptor().clone());
    let within = server.limits.header_timeout;
    tokio::spawn(async move {
        match tokio::time::timeout(within, acceptor.accept(io)).await {
            Ok(Ok(stream)) => {
                drop(permit);
                server.connection(stream, axum::extract::ConnectInfo(addr), None);
            }
            Ok(Err(e)) => {
                tracing::debug!(listener = server.name, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                tracing::debug!(listener = server.name, "TLS handshake timed out");
            }
        }
    });
}

/// Like [`run_tcp`], for a Unix socket; `peer` reads what the kernel says
/// of the connecting process and may wrap the stream.
pub async fn run_unix<I, P>(
    server: &Server,
    listener: tokio::net::UnixListener,
    shutdown: CancellationToken,
    peer: impl Fn(tokio::net::UnixStream) -> (I, P),
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    P: PeerInfo,
{
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((io, _)) => {
                    use std::os::fd::AsFd as _;
                    let uid = rustix::net::sockopt::socket_peercred(io.as_fd())
                        .ok()
                        .map(|c| c.uid.as_raw());
                    let (io, info) = peer(io);
                    server.connection(io, info, uid);
                }
                Err(e) => accept_failed(server.name, &e).await,
            },
        }
    }
}

/// An accept error (out of file descriptors, mostly): logged, and the loop
/// pauses briefly rather than spinning.
async fn accept_failed(name: &str, e: &std::io::Error) {
    tracing::warn!(listener = name, error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Raises the soft open-file limit to the hard one and returns it.
pub fn raise_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let Some(hard) = lim.maximum
        && lim.current != Some(hard)
    {
        lim.current = Some(hard);
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}
