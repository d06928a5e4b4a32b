//! Audit export: the trail streamed to outside sinks as it is committed.
//!
//! Each `[[audit_export]]` sink follows the trail on its own, from the
//! position it last delivered (kept in `<data-dir>/export/<name>.position`),
//! in order and at least once: a record delivered just before a crash may
//! be delivered again, with the same `seq`. A sink that fails is retried
//! with backoff and falls behind; its lag is in `/metrics`
//! (`warrant_audit_export_lag_records`). Decisions never wait for an
//! export: sinks only read what is already durable.
//!
//! A record is exported as one line: the stored body, exactly as hashed,
//! with `prev_hash` and `hash` added at its end
//! ([`StoredRow::export_line`]). A receiver checks continuity (each
//! `prev_hash` is the `hash` before it, `seq` has no gaps);
//! `warrant audit verify-export` has the broker check the keyed hashes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use warrant_core::audit::StoredRow;
use warrant_store::Store;

use crate::metrics::{Metrics, SinkLabels};

/// One configured sink.
#[derive(Clone, PartialEq, Eq)]
pub struct ExportSink {
    /// Its name (metrics, position file).
    pub name: String,
    /// Where records go.
    pub target: Target,
}

impl std::fmt::Debug for ExportSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.target {
            Target::File { .. } => "file",
            Target::Syslog { .. } => "syslog",
            Target::Http { .. } => "http",
        };
        f.debug_struct("ExportSink")
            .field("name", &self.name)
            .field("kind", &kind)
            .finish()
    }
}

/// Where a sink delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// JSON lines appended to a file (owner-only), rotated at `max_bytes`
    /// into `<path>.1` … `<path>.<keep>`.
    File {
        /// The file.
        path: PathBuf,
        /// Rotate before it would grow past this.
        max_bytes: u64,
        /// Rotated files kept.
        keep: u32,
    },
    /// RFC 5424 messages (facility 13, log audit), one per record.
    Syslog {
        /// How to reach the collector.
        transport: SyslogTransport,
        /// APP-NAME.
        app_name: String,
        /// HOSTNAME.
        hostname: String,
    },
    /// Batches POSTed as JSON with the chain hashes around them.
    Http {
        /// `https://`, or `http://` to loopback.
        url: url::Url,
        /// Records per request.
        batch: u32,
        /// A bearer token for the receiver, from this environment variable
        /// (read at start, never logged).
        bearer: Option<Arc<str>>,
    },
}

/// How syslog messages travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTransport {
    /// One datagram per message.
    Udp(std::net::SocketAddr),
    /// Octet-counted frames (RFC 6587 §3.4.1) on one connection.
    Tcp(std::net::SocketAddr),
    /// A local datagram socket (`/dev/log`).
    Unix(PathBuf),
}

/// Records read per round.
const READ: u32 = 500;
/// How long a caught-up sink waits before looking again.
const IDLE: Duration = Duration::from_millis(200);

/// Starts every sink; each runs until `shutdown`.
pub fn spawn(
    store: Arc<dyn Store>,
    sinks: Vec<ExportSink>,
    data_dir: &Path,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let dir = data_dir.join("export");
    sinks
        .into_iter()
        .map(|sink| {
            let (store, metrics, shutdown, dir) = (
                store.clone(),
                metrics.clone(),
                shutdown.clone(),
                dir.clone(),
            );
            tokio::spawn(async move { run(store, sink, &dir, metrics, shutdown).await })
        })
        .collect()
}

async fn run(
    store: Arc<dyn Store>,
    sink: ExportSink,
    dir: &Path,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let labels = SinkLabels {
        sink: sink.name.clone(),
    };
    let position_file = dir.join(format!("{}.position", sink.name));
    let mut position = read_position(&position_file);
    metrics
        .export_position
        .get_or_create(&labels)
        .set(i64::try_from(position).unwrap_or(i64::MAX));
    let mut out = Writer::new(&sink);
    let mut backoff = Duration::from_secs(1);
    loop {
        let rows = match store.audit_after(position, batch_size(&sink)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(sink = %sink.name, error = %e, "audit export cannot read the trail");
                Vec::new()
            }
        };
        if rows.is_empty() {
            // Stopping: everything committed until now has been delivered.
            if shutdown.is_cancelled() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(IDLE) => {}
                () = shutdown.cancelled() => {}
            }
            continue;
        }
        match out.deliver(&rows).await {
            Ok(()) => {
                position = rows.last().map_or(position, |r| r.seq);
                if let Err(e) = write_position(dir, &position_file, position) {
                    tracing::warn!(sink = %sink.name, error = %e, "cannot save the audit export's position; records may be exported again after a restart");
                }
                metrics
                    .export_position
                    .get_or_create(&labels)
                    .set(i64::try_from(position).unwrap_or(i64::MAX));
                backoff = Duration::from_secs(1);
            }
            Err(e) => {
                metrics.export_failures.get_or_create(&labels).inc();
                tracing::warn!(sink = %sink.name, error = %e, retry_in = ?backoff, "audit export failed; it will be retried (decisions do not wait for it)");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {},
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn batch_size(sink: &ExportSink) -> u32 {
    match &sink.target {
        Target::Http { batch, .. } => *batch,
        _ => READ,
    }
}

fn read_position(file: &Path) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_position(dir: &Path, file: &Path, position: u64) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = file.with_extension("position.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(position.to_string().as_bytes())?;
    f.sync_data()?;
    std::fs::rename(tmp, file)
}

/// A sink's connection or file, kept between rounds.
struct Writer {
    target: Target,
    tcp: Option<tokio::net::TcpStream>,
    http: Option<crate::outbound::Client>,
}

impl Writer {
    fn new(sink: &ExportSink) -> Self {
        let http = match &sink.target {
            Target::Http { .. } => crate::outbound::client(),
            _ => None,
        };
        Self {
            target: sink.target.clone(),
            tcp: None,
            http,
        }
    }

    async fn deliver(&mut self, rows: &[StoredRow]) -> Result<(), String> {
        match self.target.clone() {
            Target::File {
                path,
                max_bytes,
                keep,
            } => {
                let lines: Vec<String> = rows.iter().map(StoredRow::export_line).collect();
                tokio::task::spawn_blocking(move || append(&path, &lines, max_bytes, keep))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            }
            Target::Syslog {
                transport,
                app_name,
                hostname,
            } => {
                for row in rows {
                    let msg = syslog_message(row, &app_name, &hostname);
                    self.syslog(&transport, &msg).await?;
                }
                Ok(())
            }
            Target::Http { url, bearer, .. } => self.post(&url, bearer.as_deref(), rows).await,
        }
    }

    async fn syslog(&mut self, transport: &SyslogTransport, msg: &[u8]) -> Result<(), String> {
        use tokio::io::AsyncWriteExt as _;
        match transport {
            SyslogTransport::Udp(addr) => {
                let bind = if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let s = tokio::net::UdpSocket::bind(bind)
                    .await
                    .map_err(|e| e.to_string())?;
                s.send_to(msg, addr).await.map_err(|e| e.to_string())?;
                Ok(())
            }
            SyslogTransport::Unix(path) => {
                let s = tokio::net::UnixDatagram::unbound().map_err(|e| e.to_string())?;
                s.send_to(msg, path).await.map_err(|e| e.to_string())?;
                Ok(())
            }
            SyslogTransport::Tcp(addr) => {
                if self.tcp.is_none() {
                    self.tcp = Some(
                        tokio::time::timeout(
                            Duration::from_secs(5),
                            tokio::net::TcpStream::connect(addr),
                        )
                        .await
                        .map_err(|_| "connecting timed out".to_owned())?
                        .map_err(|e| e.to_string())?,
                    );
                }
                let Some(conn) = self.tcp.as_mut() else {
                    return Err("no connection".into());
                };
                let mut frame = format!("{} ", msg.len()).into_bytes();
                frame.extend_from_slice(msg);
                if let Err(e) = conn.write_all(&frame).await {
                    self.tcp = None;
                    return Err(e.to_string());
                }
                Ok(())
            }
        }
    }

    async fn post(
        &mut self,
        url: &url::Url,
        bearer: Option<&str>,
        rows: &[StoredRow],
    ) -> Result<(), String> {
        let Some(client) = &self.http else {
            return Err("the system's root certificates could not be loaded".into());
        };
        let body = http_batch(rows);
        let mut req = http::Request::post(url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("warrant/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(t) = bearer {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
            .await
            .map_err(|_| "the receiver did not answer within 30 s".to_owned())?
            .map_err(|e| crate::outbound::error_chain(&e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {}", resp.status()))
        }
    }
}

/// An HTTP sink's request body: the records (as export lines parse) and
/// the hashes that tie the batch to the chain: `prev_hash` before the
/// first, `head_hash` of the last.
pub fn http_batch(rows: &[StoredRow]) -> String {
    let records: Vec<String> = rows.iter().map(StoredRow::export_line).collect();
    let (first, last) = (rows.first(), rows.last());
    format!(
        r#"{{"first_seq":{},"last_seq":{},"prev_hash":{},"head_hash":{},"records":[{}]}}"#,
        first.map_or(0, |r| r.seq),
        last.map_or(0, |r| r.seq),
        json!(first.map(|r| hex::encode(&r.prev_hash))),
        json!(last.map(|r| hex::encode(&r.hash))),
        records.join(",")
    )
}

/// One record as an RFC 5424 message: facility 13 (log audit), severity
/// notice for refusals and errors, informational otherwise; MSGID the
/// event; structured data with its sequence, decision and hash; the
/// export line as the message.
pub fn syslog_message(row: &StoredRow, app_name: &str, hostname: &str) -> Vec<u8> {
    let severity = match row.indexed.decision.as_str() {
        "allow" | "pending" => 6,
        _ => 5,
    };
    let pri = 13 * 8 + severity;
    let time = row.indexed.time.to_string();
    let printable = |s: &str, max: usize| -> String {
        let t: String = s
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(max)
            .collect();
        if t.is_empty() { "-".into() } else { t }
    };
    let sd_value = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace(']', "\\]")
    };
    let mut msg = format!(
        "<{pri}>1 {time} {} {} {} {} [warrant@32473 seq=\"{}\" decision=\"{}\" hash=\"{}\"] ",
        printable(hostname, 255),
        printable(app_name, 48),
        std::process::id(),
        printable(&row.indexed.event, 32),
        row.seq,
        sd_value(&row.indexed.decision),
        hex::encode(&row.hash),
    )
    .into_bytes();
    // The message is UTF-8, so it starts with the BOM (RFC 5424 §6.4).
    msg.extend_from_slice(b"\xEF\xBB\xBF");
    msg.extend_from_slice(row.export_line().as_bytes());
    msg
}

/// Appends `lines` to `path` (created owner-only), rotating first when it
/// would grow past `max_bytes`, and syncs.
fn append(path: &Path, lines: &[String], max_bytes: u64, keep: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let adding: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size > 0 && size + adding > max_bytes {
        rotate(path, keep)?;
    }
    // Never through a symlink: the trail goes to the file named, or nowhere.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc_nofollow())
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "`{}` is not a regular file",
            path.display()
        )));
    }
    let mut buf = String::with_capacity(usize::try_from(adding).unwrap_or(0));
    for l in lines {
        buf.push_str(l);
        buf.push('\n');
    }
    f.write_all(buf.as_bytes())?;
    f.sync_data()
}

fn libc_nofollow() -> i32 {
    i32::try_from(rustix::fs::OFlags::NOFOLLOW.bits()).unwrap_or(0)
}

/// `path` becomes `path.1`, `path.1` becomes `path.2` …; beyond `keep`,
/// the oldest is removed.
fn rotate(path: &Path, keep: u32) -> std::io::Result<()> {
    let numbered = |n: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        if numbered(n).exists() {
            std::fs::rename(numbered(n), numbered(n + 1))?;
        }
    }
    std::fs::rename(path, numbered(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use warrant_core::audit::{AuditEvent, AuditRecord, ChainHash, Outcome};
    use warrant_core::time::Timestamp;

    fn row(seq: u64, prev: ChainHash) -> StoredRow {
        let ev = AuditEvent::new("proxy.request", Outcome::Deny)
            .agent("orch")
            .reason("a \"quoted\" ] reason");
        let sealed = AuditRecord::seal(seq, Timestamp::from_millis(1_000), ev, prev, None).unwrap();
        StoredRow {
            seq,
            indexed: sealed.record.indexed(),
            body: sealed.body,
            prev_hash: sealed.record.prev_hash.0.to_vec(),
            hash: sealed.record.hash.0.to_vec(),
        }
    }

    #[test]
    fn syslog_messages_follow_rfc5424() {
        let r = row(7, ChainHash::GENESIS);
        let m = String::from_utf8(syslog_message(&r, "warrant", "host one")).unwrap();
        assert!(
            m.starts_with("<109>1 1970-01-01T00:00:01.000Z hostone warrant "),
            "{m}"
        );
        assert!(m.contains(" proxy.request [warrant@32473 seq=\"7\" decision=\"deny\" hash=\""));
        let line = m.split_once("\u{feff}").unwrap().1;
        assert_eq!(StoredRow::from_export_line(line).unwrap().body, r.body);
    }

    #[test]
    fn files_rotate_and_keep_what_they_are_told() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.jsonl");
        let line = "x".repeat(99);
        for _ in 0..25 {
            append(&p, std::slice::from_ref(&line), 1000, 2).unwrap();
        }
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert!(size(&p) <= 1000);
        assert_eq!(size(&d.path().join("audit.jsonl.1")), 1000);
        assert_eq!(size(&d.path().join("audit.jsonl.2")), 1000);
        assert!(!d.path().join("audit.jsonl.3").exists());
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn the_file_is_never_written_through_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("elsewhere");
        std::fs::write(&target, "keep\n").unwrap();
        let p = d.path().join("audit.jsonl");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        assert!(append(&p, &["x".to_owned()], 1 << 20, 2).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep\n");
    }

    #[test]
    fn http_batches_carry_the_hashes_around_them() {
        let a = row(1, ChainHash::GENESIS);
        let b = row(2, ChainHash(a.hash.clone().try_into().unwrap()));
        let v: serde_json::Value =
            serde_json::from_str(&http_batch(&[a.clone(), b.clone()])).unwrap();
        assert_eq!(v["first_seq"], 1);
        assert_eq!(v["last_seq"], 2);
        assert_eq!(v["prev_hash"], hex::encode(&a.prev_hash));
        assert_eq!(v["head_hash"], hex::encode(&b.hash));
        assert_eq!(v["records"][1]["prev_hash"], hex::encode(&a.hash));
        assert_eq!(v["records"][0]["agent"], "orch");
    }
}
