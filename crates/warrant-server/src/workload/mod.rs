//! The SPIFFE Workload API on a Unix socket (`<data-dir>/workload.sock`):
//! gRPC over HTTP/2, the official `workload.proto`, for SPIFFE clients
//! (go-spiffe, py-spiffe, Envoy's SDS via SPIRE helpers).
//!
//! Every call must carry the `workload.spiffe.io: true` metadata (the
//! Workload API's guard against a browser or proxy reaching it), and every
//! call attests its caller with the unix attestor, as the agent socket
//! does: the kernel's credentials of the process that connected, every
//! byte checked to come from it, its executable unchanged since it
//! connected, the same agent selectors, policy (`identity:issue`) and
//! audit record. What it issues:
//!
//! - `FetchJWTSVID`: warrant identity tokens (JWT-SVIDs) for one audience;
//! - `FetchX509SVID`: an X.509-SVID from warrant's CA (see
//!   `warrant_token::x509`) living as long as an identity token, sent again
//!   with a fresh certificate at half its life (each time attested anew, so
//!   a disabled agent or revoked instance stops getting them), with the
//!   bundle;
//! - `FetchX509Bundles`, `FetchJWTBundles`: the CA certificates and the
//!   JWKS, sent again when the keys change;
//! - `ValidateJWTSVID`: a JWT-SVID checked for an audience.
//!
//! Not here: federation (no foreign bundles), CRLs, several SVIDs per
//! workload. Unlike the agent socket, it cannot ask a client to send its
//! request again after the broker looked at the process (gRPC clients send
//! as they connect); docs/agents.md says what that leaves open and which
//! selectors close it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use warrant_control::attest::unix::{Peer, PeerStream};
use warrant_control::attest::{Refusal, Request as AttestRequest};
use warrant_core::time::Timestamp;
use warrant_token::x509::X509Authority;
use warrant_workload::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
use warrant_workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svid, X509svidRequest, X509svidResponse,
};

use crate::state::AppState;

mod authority;

/// How often streams look for changed keys.
const BUNDLE_POLL: Duration = Duration::from_secs(5);

/// The peer of a Workload API connection, read when it was accepted.
#[derive(Debug, Clone)]
pub struct WorkloadPeer(Option<Peer>);

/// An accepted connection whose every read checks who sent the bytes.
pub struct Conn {
    io: authority::FixAuthority<PeerStream>,
    peer: WorkloadPeer,
    /// Its place under the socket's caps, given back when it closes.
    _slot: Slot,
}

/// A connection's place under the caps: the listener's permit and, for a
/// peer with a uid, one of that user's connections.
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _user: Option<UserSlot>,
}

type Users = Arc<parking_lot::Mutex<HashMap<u32, usize>>>;

/// One of a user's open connections, given back when dropped.
struct UserSlot(Users, u32);

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut u = self.0.lock();
        if let Some(n) = u.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                u.remove(&self.1);
            }
        }
    }
}

impl Conn {
    /// Reads the peer of a just-accepted connection.
    fn accept(stream: tokio::net::UnixStream, slot: Slot) -> Self {
        let (io, peer) = crate::http::attest::AgentPeer::accept(stream);
        Self {
            io: authority::FixAuthority::new(io),
            peer: WorkloadPeer(peer.0),
            _slot: slot,
        }
    }
}

/// A place under the caps for a connection from `uid`, if one is free.
fn admit(
    permits: &Arc<tokio::sync::Semaphore>,
    users: &Users,
    per_user: Option<usize>,
    uid: Option<u32>,
) -> Option<Slot> {
    let user = match (uid, per_user) {
        (Some(uid), Some(max)) => {
            let mut u = users.lock();
            let open = u.entry(uid).or_default();
            if *open >= max {
                return None;
            }
            *open += 1;
            Some(UserSlot(users.clone(), uid))
        }
        _ => None,
    };
    // With the listener full, `user` is dropped here and gives its count back.
    let permit = permits.clone().try_acquire_owned().ok()?;
    Some(Slot {
        _permit: permit,
        _user: user,
    })
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = WorkloadPeer;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The Workload API service.
#[derive(Clone)]
pub struct Workload {
    state: AppState,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Workload")
    }
}

/// Serves the Workload API on `listener` until `shutdown`, with the agent
/// socket's connection caps (`limits`: in all, and per local user), counted
/// separately: a connection over a cap is closed at once.
pub async fn serve(
    state: AppState,
    listener: tokio::net::UnixListener,
    limits: crate::listener::Limits,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let users: Users = Arc::default();
    let metrics = state.metrics.clone();
    let incoming = futures_util::stream::unfold(listener, move |l| {
        let (permits, users, metrics) = (permits.clone(), users.clone(), metrics.clone());
        async move {
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        use std::os::fd::AsFd as _;
                        let uid = rustix::net::sockopt::socket_peercred(s.as_fd())
                            .ok()
                            .map(|c| c.uid.as_raw());
                        match admit(&permits, &users, limits.per_user, uid) {
                            Some(slot) => {
                                return Some((Ok::<_, std::io::Error>(Conn::accept(s, slot)), l));
                            }
                            None => {
                                metrics.connection_refused("workload");
                                drop(s);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(listener = "workload", error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    });
    let svc = SpiffeWorkloadApiServer::new(Workload { state }).max_decoding_message_size(64 * 1024);
    let r = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(32)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "the Workload API stopped");
    }
}

fn refusal_status(r: &Refusal) -> Status {
    match r {
        Refusal::Invalid(m) => Status::invalid_argument(m.clone()),
        Refusal::Denied(m) => Status::permission_denied(m.clone()),
        Refusal::Unavailable(m) => {
            tracing::warn!(cause = %m, "Workload API answered unavailable");
            Status::unavailable("the broker cannot issue identities right now; try again shortly")
        }
    }
}

impl Workload {
    /// The security header, and the caller's peer.
    fn caller<T>(&self, req: &Request<T>) -> Result<Peer, Status> {
        let header = req
            .metadata()
            .get("workload.spiffe.io")
            .and_then(|v| v.to_str().ok());
        if header != Some("true") {
            return Err(Status::invalid_argument(
                "security header missing from request: send `workload.spiffe.io: true`",
            ));
        }
        req.extensions()
            .get::<WorkloadPeer>()
            .and_then(|p| p.0.clone())
            .ok_or_else(|| Status::permission_denied("the kernel did not say who is connected"))
    }

    /// Attests the caller and issues its identity (for `audience`, or the
    /// broker), recorded like any attestation.
    async fn attest(
        &self,
        peer: Peer,
        audience: Option<String>,
    ) -> Result<warrant_control::attest::IdentityResponse, Status> {
        let req = AttestRequest {
            source: Some(format!("workload-api uid={} pid={}", peer.uid, peer.pid)),
            source_ip: None,
            audience,
        };
        self.state
            .attest
            .unix(peer, &req)
            .await
            .map_err(|r| refusal_status(&r))
    }

    fn trust_domain_id(&self) -> String {
        format!("spiffe://{}", self.state.trust_domain)
    }

    fn ca(&self, now: Timestamp) -> Result<Arc<X509Authority>, Status> {
        self.state
            .keys
            .x509(self.state.trust_domain.as_str(), now)
            .map_err(|e| {
                tracing::error!(error = %e, "cannot derive the X.509 CA");
                Status::unavailable("the broker's X.509 CA is unavailable")
            })
    }

    /// One X.509-SVID response for `peer`, and how long until the next.
    async fn x509_response(&self, peer: Peer) -> Result<(X509svidResponse, Duration), Status> {
        let id = self.attest(peer, None).await?;
        let now = Timestamp::now();
        let ca = self.ca(now)?;
        let ttl = Duration::from_secs(id.expires_in.max(1));
        let svid = ca.issue(&id.spiffe_id, ttl, now).map_err(|e| {
            tracing::error!(error = %e, "cannot issue an X.509-SVID");
            Status::unavailable("the broker cannot issue X.509-SVIDs right now")
        })?;
        let response = X509svidResponse {
            svids: vec![X509svid {
                spiffe_id: id.spiffe_id,
                x509_svid: svid.cert_der,
                x509_svid_key: svid.key_pkcs8.to_vec(),
                bundle: ca.bundle(),
                hint: String::new(),
            }],
            crl: Vec::new(),
            federated_bundles: HashMap::new(),
        };
        // Sent again at half its life: a client always holds one with time left.
        Ok((response, ttl / 2))
    }
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A server stream fed by `next`, called at once and then after each wait
/// it names: `Ok((Some(item), wait))` sends an item, `Ok((None, wait))`
/// sends nothing this time, an error ends the stream after sending it. It
/// stops when the client goes.
fn streamed<T, F, Fut>(mut next: F) -> Streamed<T>
where
    T: Send + 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(Option<T>, Duration), Status>> + Send,
{
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            let wait = match next().await {
                Ok((item, wait)) => {
                    if let Some(item) = item
                        && tx.send(Ok(item)).await.is_err()
                    {
                        return;
                    }
                    wait
                }
                Err(s) => {
                    let _ = tx.send(Err(s)).await;
                    return;
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Workload {
    type FetchX509SVIDStream = Streamed<X509svidResponse>;
    type FetchX509BundlesStream = Streamed<X509BundlesResponse>;
    type FetchJWTBundlesStream = Streamed<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let peer = self.caller(&request)?;
        // The first answer (or refusal) is given before the stream opens.
        let first = self.x509_response(peer.clone()).await?;
        let mut first = Some(first);
        let this = self.clone();
        Ok(Response::new(streamed(move || {
            let (this, peer, ready) = (this.clone(), peer.clone(), first.take());
            async move {
                let (r, wait) = match ready {
                    Some(r) => r,
                    None => this.x509_response(peer).await?,
                };
                Ok((Some(r), wait))
            }
        })))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let peer = self.caller(&request)?;
        self.attest(peer, None).await?;
        let this = self.clone();
        let sent: Arc<parking_lot::Mutex<Vec<String>>> = Arc::default();
        Ok(Response::new(streamed(move || {
            let (this, sent) = (this.clone(), sent.clone());
            async move {
                let ca = this.ca(Timestamp::now())?;
                let kids: Vec<String> = ca.kids().iter().map(|k| (*k).to_owned()).collect();
                let changed = std::mem::replace(&mut *sent.lock(), kids.clone()) != kids;
                let item = changed.then(|| X509BundlesResponse {
                    crl: Vec::new(),
                    bundles: HashMap::from([(this.trust_domain_id(), ca.bundle())]),
                });
                Ok((item, BUNDLE_POLL))
            }
        })))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let peer = self.caller(&request)?;
        let req = request.into_inner();
        let audience = match req.audience.as_slice() {
            [one] if !one.is_empty() => one.clone(),
            [] => return Err(Status::invalid_argument("give the JWT-SVID's audience")),
            _ => {
                return Err(Status::invalid_argument(
                    "warrant issues a JWT-SVID for one audience; ask once per audience",
                ));
            }
        };
        let id = self.attest(peer, Some(audience)).await?;
        if !req.spiffe_id.is_empty() && req.spiffe_id != id.spiffe_id {
            return Err(Status::permission_denied(
                "this workload's SPIFFE ID is not the one asked for",
            ));
        }
        Ok(Response::new(JwtsvidResponse {
            svids: vec![Jwtsvid {
                spiffe_id: id.spiffe_id,
                svid: id.identity_token,
                hint: String::new(),
            }],
        }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let peer = self.caller(&request)?;
        self.attest(peer, None).await?;
        let this = self.clone();
        let sent: Arc<parking_lot::Mutex<Vec<u8>>> = Arc::default();
        Ok(Response::new(streamed(move || {
            let (this, sent) = (this.clone(), sent.clone());
            async move {
                let jwks = this.state.keys.current().jwks(Timestamp::now());
                let jwks = serde_json::to_vec(&jwks).unwrap_or_default();
                let changed = std::mem::replace(&mut *sent.lock(), jwks.clone()) != jwks;
                let item = changed.then(|| JwtBundlesResponse {
                    bundles: HashMap::from([(this.trust_domain_id(), jwks)]),
                });
                Ok((item, BUNDLE_POLL))
            }
        })))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        let peer = self.caller(&request)?;
        self.attest(peer, None).await?;
        let req = request.into_inner();
        if req.audience.is_empty() {
            return Err(Status::invalid_argument(
                "give the audience to validate for",
            ));
        }
        if req.svid.is_empty() {
            return Err(Status::invalid_argument("give the JWT-SVID to validate"));
        }
        let (spiffe_id, claims) = self
            .state
            .attest
            .validate_identity(&req.svid, &req.audience)
            .map_err(Status::invalid_argument)?;
        // As the broker itself would answer: the SVID of a disabled or
        // removed agent, or of a revoked instance, is no longer valid, even
        // before it expires (attacker round).
        let prefix = format!("spiffe://{}/agent/", self.state.trust_domain);
        let (name, instance) = spiffe_id
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once('/'))
            .ok_or_else(|| Status::invalid_argument("the JWT-SVID names no agent instance"))?;
        let agent = warrant_core::name::AgentName::new(name)
            .map_err(|_| Status::invalid_argument("the JWT-SVID names no agent instance"))?;
        match self.state.store.get_agent(&agent).await {
            Ok(Some(a)) if a.status == warrant_core::agent::AgentStatus::Active => {}
            Ok(_) => {
                return Err(Status::invalid_argument(format!(
                    "agent `{name}` is not active; its SVIDs are no longer valid"
                )));
            }
            Err(_) => return Err(Status::unavailable("the broker's store is unavailable")),
        }
        if self.state.tokens.is_blocked(instance) {
            return Err(Status::invalid_argument(
                "this instance has been revoked; its SVIDs are no longer valid",
            ));
        }
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id,
            claims: Some(to_struct(claims)),
        }))
    }
}

fn to_value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn to_struct(m: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}
