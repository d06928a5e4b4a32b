//! A supervised stdio MCP server: the gateway's client end.
//!
//! The child is spawned with a clean environment (only `PATH`, `HOME` and
//! what the configuration names; `secret:<name>` values resolved from the
//! store into the child alone, never the broker's own variables such as
//! `WARRANT_KEK`), spoken to with newline-delimited JSON-RPC, and initialised
//! with the `initialize` handshake, which every SDK's stdio server speaks.
//! Request ids are the gateway's own. If the child exits, every call in
//! flight fails at once with [`UpstreamError::Exited`]; the next call starts
//! it again, after a back-off that doubles while it keeps failing (up to
//! [`MAX_BACKOFF`]). The child is killed when the upstream is dropped.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;
use warrant_core::secret::SecretName;

use crate::services::CredentialSource;

/// The protocol revision asked for in the handshake.
pub const HANDSHAKE_VERSION: &str = "2025-11-25";
/// The longest wait before a failing child is started again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest line the child may write (one JSON-RPC message).
const MAX_LINE: usize = 32 * 1024 * 1024;

/// One environment variable of the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// As written.
    Plain(String),
    /// A stored secret, resolved at start.
    Secret(SecretName),
}

/// How to start the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdioSpec {
    /// The program.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its environment, besides `PATH` and `HOME`.
    pub env: Vec<(String, EnvValue)>,
}

/// Environment variables that tell a program where to load code from (or
/// what to run first). Every path in them must be as trusted as the
/// program itself.
const CODE_ENV: &[&str] = &[
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONHOME",
    "PYTHONUSERBASE",
    "PYTHONSAFEPATH",
    "PYTHONPYCACHEPREFIX",
    "PYTHONPLATLIBDIR",
    "VIRTUAL_ENV",
    "NODE_PATH",
    "NODE_OPTIONS",
    "NPM_CONFIG_PREFIX",
    "PERL5LIB",
    "PERLLIB",
    "PERL5OPT",
    "RUBYLIB",
    "RUBYOPT",
    "GEM_HOME",
    "GEM_PATH",
    "BUNDLE_GEMFILE",
    "CLASSPATH",
    "JAVA_TOOL_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "_JAVA_OPTIONS",
    "LUA_PATH",
    "LUA_CPATH",
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    "BASH_ENV",
    "ENV",
    "GCONV_PATH",
    "HOME",
    "PATH",
];

/// Whether a variable names where code is loaded from.
fn loads_code(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    CODE_ENV.contains(&k.as_str()) || k.starts_with("LD_") || k.starts_with("DYLD_")
}

/// The pieces of an argument or variable that could be paths.
fn path_pieces(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ':' | '=' | ',' | ';'))
        .filter(|p| !p.is_empty())
}

/// Whether a file is a script (an interpreter loads its neighbours).
fn is_script(path: &std::path::Path) -> bool {
    use std::io::Read as _;
    let by_name = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        matches!(
            e.to_ascii_lowercase().as_str(),
            "py" | "pyc"
                | "pyz"
                | "js"
                | "mjs"
                | "cjs"
                | "ts"
                | "mts"
                | "rb"
                | "pl"
                | "pm"
                | "php"
                | "sh"
                | "lua"
                | "jar"
        )
    });
    let mut head = [0u8; 2];
    by_name
        || std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok_and(|()| &head == b"#!")
}

/// Where `command` is, as the child is started: itself if it names a path,
/// else the first executable of that name on `PATH` (the one in its `env`
/// if set there).
pub fn program_path(
    command: &str,
    path_var: Option<&std::ffi::OsStr>,
) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    if command.contains('/') {
        return std::fs::metadata(command).is_ok().then(|| command.into());
    }
    let inherited = std::env::var_os("PATH");
    let path = path_var.or(inherited.as_deref())?;
    std::env::split_paths(path)
        .map(|d| d.join(command))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Checks what a stdio MCP server's process runs and loads code from can
/// be changed only by the broker's user or root: the program (and, for a
/// script, everything in its directory), the working directory it starts
/// in, its first operand when that is a directory (`python3 DIR` runs
/// `DIR/__main__.py`), every file its arguments and environment name
/// (scripts with their directories), and every path in a variable that
/// says where code is loaded from (`PYTHONPATH`, `NODE_OPTIONS`, `LD_*`,
/// ...), including one that does not exist yet and so could be created.
/// Checked at start-up and again before each start of the process.
pub fn check_sources(spec: &StdioSpec, server: &str) -> Result<(), String> {
    use std::path::{Path, PathBuf};
    use warrant_host::trust::{Trust, check_code_tree, check_trusted, check_trusted_as};

    let of = |w: &str| format!("{w} (of [[mcp_server]] `{server}`)");
    let plain = |key: &str| {
        spec.env.iter().find_map(|(k, v)| match v {
            EnvValue::Plain(v) if k == key => Some(v.as_str()),
            _ => None,
        })
    };
    let program =
        program_path(&spec.command, plain("PATH").map(std::ffi::OsStr::new)).ok_or_else(|| {
            format!(
                "command `{}` (of [[mcp_server]] `{server}`) is not found{}",
                spec.command,
                if spec.command.contains('/') {
                    ""
                } else {
                    " on PATH"
                }
            )
        })?;
    let cwd =
        std::env::current_dir().map_err(|e| format!("{}: {e}", of("the working directory")))?;
    let file = |p: &Path, what: &str| -> Result<(), String> {
        check_trusted(p, what, true)?;
        if is_script(p)
            && let Some(dir) = std::fs::canonicalize(p)
                .ok()
                .and_then(|r| r.parent().map(Path::to_path_buf))
        {
            check_code_tree(&dir, &format!("the directory of {what}"))?;
        }
        Ok(())
    };
    file(&program, &of("command"))?;
    check_trusted_as(
        &cwd,
        &of("the working directory it starts in"),
        Trust::CodeDir,
    )?;
    let resolve = |piece: &str| -> PathBuf {
        let p = Path::new(piece);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            cwd.join(p)
        }
    };
    // The first operand an interpreter runs, and every file named.
    let mut operand_seen = false;
    for (n, a) in spec.args.iter().enumerate() {
        // Named by position: an argument may hold more than a path (a
        // token), and only the path checked is shown.
        let what = of(&format!("argument {}", n + 1));
        let first_operand = !operand_seen && !a.starts_with('-');
        operand_seen |= first_operand;
        for piece in path_pieces(a) {
            let p = resolve(piece);
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => {
                    if first_operand && piece == a {
                        check_code_tree(&p, &what)?;
                    }
                }
                Ok(_) => file(&p, &what)?,
                Err(_) => {}
            }
        }
    }
    // `PATH` and `HOME` the child inherits from the broker are as much its
    // code's source as those its `env` sets.
    let inherited: Vec<(String, EnvValue)> = ["PATH", "HOME"]
        .iter()
        .filter(|k| !spec.env.iter().any(|(e, _)| e.eq_ignore_ascii_case(k)))
        .filter_map(|k| {
            std::env::var(k)
                .ok()
                .map(|v| ((*k).to_owned(), EnvValue::Plain(v)))
        })
        .collect();
    for (key, value) in spec.env.iter().chain(inherited.iter()) {
        let EnvValue::Plain(value) = value else {
            continue;
        };
        let what = of(&format!("env `{key}`"));
        let code = loads_code(key);
        for piece in path_pieces(value) {
            let p = resolve(piece);
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() && code => {
                    if matches!(key.to_ascii_uppercase().as_str(), "PATH" | "HOME") {
                        check_trusted_as(&p, &what, Trust::CodeDir)?;
                    } else {
                        check_code_tree(&p, &what)?;
                    }
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => file(&p, &what)?,
                Err(_) if code && Path::new(piece).is_absolute() => {
                    // Whoever can create it decides what is loaded.
                    let parent = p
                        .ancestors()
                        .skip(1)
                        .find(|a| a.exists())
                        .unwrap_or(Path::new("/"));
                    check_trusted_as(
                        parent,
                        &format!(
                            "{what}: `{piece}` is not there yet, and whoever can create it decides what is loaded; the directory"
                        ),
                        Trust::CodeDir,
                    )?;
                }
                Err(_) => {}
            }
        }
    }
    Ok(())
}

/// Why a call did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The child could not be started, or is waiting out its back-off.
    #[error("the MCP server `{server}` is not available: {why}")]
    Unavailable {
        /// The server.
        server: String,
        /// Why.
        why: String,
    },
    /// The child exited while the call was in flight.
    #[error("the MCP server `{0}` exited during the call")]
    Exited(String),
    /// No answer in time.
    #[error("the MCP server `{0}` did not answer in time")]
    Timeout(String),
    /// No credential can be had for this use (a per-user secret that is not
    /// stored, a per-user server used without a user).
    #[error("{0}")]
    Refused(String),
    /// The server answered with a JSON-RPC error.
    #[error("the MCP server answered with error {code}: {message}")]
    Rpc {
        /// JSON-RPC error code.
        code: i64,
        /// Its message.
        message: String,
        /// Its data.
        data: Option<Value>,
    },
}

impl UpstreamError {
    /// A JSON-RPC `error` object from the upstream.
    pub fn from_rpc(e: &Value) -> Self {
        Self::Rpc {
            code: e
                .get("code")
                .and_then(Value::as_i64)
                .unwrap_or(super::message::code::INTERNAL_ERROR),
            message: e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .chars()
                .take(1000)
                .collect(),
            data: e.get("data").cloned(),
        }
    }
}

type Pending = Mutex<HashMap<u64, oneshot::Sender<Result<Value, UpstreamError>>>>;

/// A running child.
struct Conn {
    stdin: tokio::sync::Mutex<ChildStdin>,
    // A std mutex: held only to insert or take a waiter.
    pending: Arc<Pending>,
    alive: Arc<AtomicBool>,
    _child: Child,
    /// The server's answer to `initialize`.
    initialized: Value,
}

struct Health {
    failures: u32,
    retry_at: Option<Instant>,
    /// Why it last failed to start, or that it exited.
    last: String,
}

/// A stdio MCP server under supervision.
pub struct StdioUpstream {
    name: String,
    spec: StdioSpec,
    secrets: Arc<dyn CredentialSource>,
    next_id: AtomicU64,
    /// Counts starts and exits of the child.
    epoch: Arc<AtomicU64>,
    // A tokio mutex: held while a child starts, so one start runs at a time.
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    // A std mutex: held only to read or update the back-off.
    health: Mutex<Health>,
}

impl std::fmt::Debug for StdioUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioUpstream")
            .field("name", &self.name)
            .field("command", &self.spec.command)
            .finish_non_exhaustive()
    }
}

impl StdioUpstream {
    /// An upstream that starts on first use.
    pub fn new(name: &str, spec: StdioSpec, secrets: Arc<dyn CredentialSource>) -> Self {
        Self {
            name: name.to_owned(),
            spec,
            secrets,
            next_id: AtomicU64::new(1),
            epoch: Arc::new(AtomicU64::new(0)),
            conn: tokio::sync::Mutex::new(None),
            health: Mutex::new(Health {
                failures: 0,
                retry_at: None,
                last: String::new(),
            }),
        }
    }

    fn unavailable(&self, why: impl Into<String>) -> UpstreamError {
        UpstreamError::Unavailable {
            server: self.name.clone(),
            why: why.into(),
        }
    }

    fn failed(&self, why: String) {
        {
            let mut h = self.health.lock();
            h.last = why;
            h.failures = h.failures.saturating_add(1);
            let backoff = Duration::from_millis(250)
                .saturating_mul(1 << h.failures.min(8))
                .min(MAX_BACKOFF);
            h.retry_at = Some(Instant::now() + backoff);
        }
    }

    /// Changes whenever the child starts or exits: a new process may
    /// announce other tools, so the gateway lists them again.
    pub fn generation(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The server's `initialize` result (starting it if needed).
    pub async fn server_info(&self, timeout: Duration) -> Result<Value, UpstreamError> {
        Ok(self.running(timeout).await?.initialized.clone())
    }

    /// Sends a request and waits for its result.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, UpstreamError> {
        let conn = self.running(timeout).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let rx = send(&conn, id, method, params)
            .await
            .map_err(|_| UpstreamError::Exited(self.name.clone()))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(UpstreamError::Exited(self.name.clone())),
            Err(_) => {
                {
                    let mut p = conn.pending.lock();
                    p.remove(&id);
                }
                Err(UpstreamError::Timeout(self.name.clone()))
            }
        }
    }

    /// The running child, started (and initialised) if there is none.
    async fn running(&self, timeout: Duration) -> Result<Arc<Conn>, UpstreamError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if c.alive.load(Ordering::Acquire) {
                return Ok(c.clone());
            }
            // It exited: wait out a back-off before starting it again.
            *slot = None;
            self.failed("it exited".into());
        }
        let wait = {
            let h = self.health.lock();
            h.retry_at
                .and_then(|t| t.checked_duration_since(Instant::now()))
                .map(|w| (w, h.last.clone()))
        };
        if let Some((w, last)) = wait {
            return Err(self.unavailable(format!(
                "{last}; it is started again in {} ms",
                w.as_millis()
            )));
        }
        match self.start(timeout).await {
            Ok(c) => {
                let c = Arc::new(c);
                *slot = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                let why = match &e {
                    UpstreamError::Unavailable { why, .. } => why.clone(),
                    other => other.to_string(),
                };
                self.failed(why);
                Err(e)
            }
        }
    }

    async fn start(&self, timeout: Duration) -> Result<Conn, UpstreamError> {
        // Checked again at every start: a file or directory may have been
        // opened to others since the last.
        let spec = self.spec.clone();
        let name = self.name.clone();
        // The check's findings (host paths, OS errors) are for the operator's
        // log; the agent learns only that the server was not started.
        tokio::task::spawn_blocking(move || check_sources(&spec, &name))
            .await
            .map_err(|e| self.unavailable(e.to_string()))?
            .map_err(|e| {
                tracing::error!(server = %self.name, problem = %e, "an MCP server's code is not trusted; not starting it");
                self.unavailable(
                    "it cannot be started as configured (the broker's log says why)",
                )
            })?;
        let mut cmd = Command::new(&self.spec.command);
        cmd.args(&self.spec.args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for key in ["PATH", "HOME"] {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        let mut secret_values: Vec<Vec<u8>> = Vec::new();
        for (key, value) in &self.spec.env {
            match value {
                EnvValue::Plain(v) => {
                    cmd.env(key, v);
                }
                EnvValue::Secret(name) => {
                    let resolved = self
                        .secrets
                        .secret(name, None)
                        .await
                        .map_err(|e| self.unavailable(e.to_string()))?
                        .ok_or_else(|| {
                            self.unavailable(format!(
                                "its environment names secret `{name}`, which is not stored; store it with `warrant secret put {name}`"
                            ))
                        })?;
                    let v = std::str::from_utf8(resolved.value.expose())
                        .map_err(|_| self.unavailable(format!("secret `{name}` is not text")))?;
                    secret_values.push(resolved.value.expose().to_vec());
                    cmd.env(key, v);
                }
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| {
                tracing::error!(server = %self.name, command = %self.spec.command, error = %e, "cannot start the MCP server");
                self.unavailable("it could not be started")
            })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(self.unavailable("its standard streams could not be opened"));
        };
        let pending: Arc<Pending> = Arc::new(Mutex::new(HashMap::new()));
        let alive = Arc::new(AtomicBool::new(true));
        // What the child says never carries the secrets it was given.
        let redactor = Arc::new(crate::redact::Redactor::new(secret_values));
        tokio::spawn(read_stdout(
            self.name.clone(),
            stdout,
            pending.clone(),
            alive.clone(),
            self.epoch.clone(),
            redactor.clone(),
        ));
        tokio::spawn(log_stderr(self.name.clone(), stderr, redactor));
        let mut conn = Conn {
            stdin: tokio::sync::Mutex::new(stdin),
            pending,
            alive,
            _child: child,
            initialized: Value::Null,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let params = json!({
            "protocolVersion": HANDSHAKE_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "warrant-gateway", "version": env!("CARGO_PKG_VERSION") },
        });
        let rx = send(&conn, id, "initialize", params)
            .await
            .map_err(|_| self.unavailable("it closed its input at start"))?;
        let init = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(v))) => v,
            Ok(Ok(Err(e))) => {
                return Err(self.unavailable(format!("it refused to initialise: {e}")));
            }
            Ok(Err(_)) => return Err(self.unavailable("it exited at start")),
            Err(_) => return Err(self.unavailable("it did not initialise in time")),
        };
        notify(&conn, "notifications/initialized")
            .await
            .map_err(|_| self.unavailable("it closed its input at start"))?;
        conn.initialized = init;
        self.epoch.fetch_add(1, Ordering::AcqRel);
        {
            let mut h = self.health.lock();
            h.failures = 0;
            h.retry_at = None;
        }
        tracing::info!(server = %self.name, "started the MCP server");
        Ok(conn)
    }
}

async fn write_line(conn: &Conn, msg: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut stdin = conn.stdin.lock().await;
    stdin.write_all(&line).await?;
    stdin.flush().await
}

async fn send(
    conn: &Conn,
    id: u64,
    method: &str,
    params: Value,
) -> std::io::Result<oneshot::Receiver<Result<Value, UpstreamError>>> {
    let (tx, rx) = oneshot::channel();
    {
        let mut p = conn.pending.lock();
        p.insert(id, tx);
    }
    let msg = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
    if let Err(e) = write_line(conn, &msg).await {
        {
            let mut p = conn.pending.lock();
            p.remove(&id);
        }
        return Err(e);
    }
    Ok(rx)
}

async fn notify(conn: &Conn, method: &str) -> std::io::Result<()> {
    write_line(conn, &json!({ "jsonrpc": "2.0", "method": method })).await
}

/// Routes answers to their callers; when the child's output ends, fails
/// every call in flight.
async fn read_stdout(
    server: String,
    stdout: tokio::process::ChildStdout,
    pending: Arc<Pending>,
    alive: Arc<AtomicBool>,
    epoch: Arc<AtomicU64>,
    redactor: Arc<crate::redact::Redactor>,
) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n: usize = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .unwrap_or_default();
        if n == 0 || line.len() > MAX_LINE {
            break;
        }
        let Ok(mut msg) = serde_json::from_slice::<Value>(&line) else {
            tracing::warn!(server = %server, "the MCP server wrote a line that is not JSON; ignored");
            continue;
        };
        // Redacted as parsed values, so no JSON escape hides a secret.
        redactor.redact_value(&mut msg);
        let Some(id) = msg.get("id").and_then(Value::as_u64) else {
            // A notification. A changed tool list makes the gateway list
            // (and check the pins of) the tools again on next use.
            if msg.get("method").and_then(Value::as_str) == Some("notifications/tools/list_changed")
            {
                epoch.fetch_add(1, Ordering::AcqRel);
            }
            continue;
        };
        // Taken out of the message, not copied.
        let answer = match (msg.get_mut("result").map(Value::take), msg.get("error")) {
            (Some(r), _) => Ok(r),
            (None, Some(e)) => Err(UpstreamError::from_rpc(e)),
            _ => continue,
        };
        if let Some(tx) = pending.lock().remove(&id) {
            let _ = tx.send(answer);
        }
    }
    alive.store(false, Ordering::Release);
    epoch.fetch_add(1, Ordering::AcqRel);
    tracing::warn!(server = %server, "the MCP server exited; calls in flight fail, the next one starts it again");
    // Dropping the senders wakes every waiter with `Exited`.
    {
        let mut p = pending.lock();
        p.clear();
    }
}

/// The child's diagnostics, to the log, with its secrets taken out.
async fn log_stderr(
    server: String,
    stderr: tokio::process::ChildStderr,
    redactor: Arc<crate::redact::Redactor>,
) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    while let Some(cut) = next_line(&mut reader, &mut line).await {
        let clean = redactor.redact_all(&line).unwrap_or_else(|| line.clone());
        let text = String::from_utf8_lossy(&clean);
        let shown: String = text.trim_end().chars().take(500).collect();
        tracing::debug!(server = %server, stderr = %shown, truncated = cut, "MCP server");
    }
}

/// The most of one stderr line of a stdio MCP server that is read.
const MAX_STDERR_LINE: usize = 8 * 1024;

/// Reads the next line into `line` (cleared first), keeping at most
/// [`MAX_STDERR_LINE`] bytes of it; the rest of a longer line is read and
/// dropped, so a child cannot grow the broker's memory. `None` at the end;
/// otherwise whether the line was cut.
async fn next_line<R>(reader: &mut R, line: &mut Vec<u8>) -> Option<bool>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    line.clear();
    let n = (&mut *reader)
        .take(MAX_STDERR_LINE as u64)
        .read_until(b'\n', line)
        .await
        .unwrap_or_default();
    if n == 0 {
        return None;
    }
    let cut = line.last() != Some(&b'\n');
    if cut {
        let mut skip = Vec::new();
        loop {
            skip.clear();
            let m = (&mut *reader)
                .take(MAX_STDERR_LINE as u64)
                .read_until(b'\n', &mut skip)
                .await
                .unwrap_or_default();
            if m == 0 || skip.last() == Some(&b'\n') {
                break;
            }
        }
    }
    Some(cut)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// What a server loads code from is checked before every start, so a
    /// directory opened to others after start-up stops the next start.
    #[test]
    fn code_sources_are_checked_again_as_they_change() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let lib = tmp.path().join("lib");
        std::fs::create_dir(&lib).unwrap();
        std::fs::write(lib.join("mod.py"), "").unwrap();
        let mode = |p: &std::path::Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        };
        mode(&lib, 0o755);
        mode(&lib.join("mod.py"), 0o644);
        let spec = |key: &str, value: String| StdioSpec {
            command: "python3".into(),
            args: vec!["-m".into(), "mod".into()],
            env: vec![(key.into(), EnvValue::Plain(value))],
        };
        let path = spec("PYTHONPATH", lib.display().to_string());
        assert_eq!(check_sources(&path, "s"), Ok(()));
        mode(&lib.join("mod.py"), 0o664);
        let e = check_sources(&path, "s").unwrap_err();
        assert!(e.contains("mod.py") && e.contains("PYTHONPATH"), "{e}");
        mode(&lib.join("mod.py"), 0o644);
        mode(&lib, 0o1777);
        assert!(
            check_sources(&path, "s").is_err(),
            "a shared directory, sticky or not"
        );
        mode(&lib, 0o755);
        // Not there yet: fine where only the broker's user can create it.
        assert_eq!(
            check_sources(
                &spec("LD_PRELOAD", lib.join("x.so").display().to_string()),
                "s"
            ),
            Ok(())
        );
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        mode(&shared, 0o1777);
        let e = check_sources(
            &spec("ld_preload", shared.join("x.so").display().to_string()),
            "s",
        )
        .unwrap_err();
        assert!(e.contains("not there yet"), "{e}");
        // A variable that loads no code may name a shared directory.
        assert_eq!(
            check_sources(&spec("OUT_DIR", shared.display().to_string()), "s"),
            Ok(())
        );
        // Found in review: Python reads cached bytecode from
        // PYTHONPYCACHEPREFIX, so it names where code comes from.
        let e = check_sources(
            &spec(
                "PYTHONPYCACHEPREFIX",
                shared.join("pyc").display().to_string(),
            ),
            "s",
        )
        .unwrap_err();
        assert!(e.contains("PYTHONPYCACHEPREFIX"), "{e}");
    }

    /// Issue 12 (low): a stdio server's stderr lines had no length limit,
    /// so one endless line grew the broker's memory without bound.
    #[tokio::test]
    async fn a_stderr_line_is_kept_to_its_cap() {
        let mut input = b"short\n".to_vec();
        input.extend(std::iter::repeat_n(b'a', 10 * MAX_STDERR_LINE + 17));
        input.extend(b"\nafter\nno newline at the end");
        let mut reader = BufReader::new(&input[..]);
        let mut line = Vec::new();
        let mut seen = Vec::new();
        while let Some(cut) = next_line(&mut reader, &mut line).await {
            assert!(line.len() <= MAX_STDERR_LINE, "{}", line.len());
            seen.push((line.len(), cut));
        }
        assert_eq!(
            seen,
            [(6, false), (MAX_STDERR_LINE, true), (6, false), (21, true)]
        );
    }

    fn repo() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// The SDK's stdio server, as a configuration would name it.
    fn spec(env: Vec<(String, EnvValue)>) -> StdioSpec {
        let python = repo().join("target/interop-venv/bin/python");
        assert!(
            python.exists(),
            "run scripts/setup-test-deps (scripts/test does) for the MCP SDK"
        );
        StdioSpec {
            command: python.display().to_string(),
            args: vec![
                repo()
                    .join("tests/interop/mcp_files_server.py")
                    .display()
                    .to_string(),
                "stdio".into(),
            ],
            env,
        }
    }

    fn secrets() -> Arc<dyn CredentialSource> {
        Arc::new(crate::testing::MemorySecrets::with(&[(
            "files-key",
            b"files-key-0123456789",
        )]))
    }

    fn text(result: &Value) -> String {
        result["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    const T: Duration = Duration::from_secs(20);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_supervised_child_gets_its_secret_and_comes_back_after_a_crash() {
        let env = vec![(
            "FILES_API_KEY".to_owned(),
            EnvValue::Secret(SecretName::new("files-key").unwrap()),
        )];
        let up = StdioUpstream::new("files", spec(env), secrets());

        let tools = up.call("tools/list", json!({}), T).await.unwrap();
        let names: Vec<&str> = tools["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert!(
            names.contains(&"read_file") && names.contains(&"crash"),
            "{names:?}"
        );
        assert_eq!(
            up.server_info(T).await.unwrap()["serverInfo"]["name"],
            "files"
        );

        let r = up
            .call(
                "tools/call",
                json!({"name": "read_file", "arguments": {"path": "/srv/reports/a"}}),
                T,
            )
            .await
            .unwrap();
        assert!(text(&r).contains("/srv/reports/a"), "{r}");

        // The secret reached the child's environment, and nothing of the
        // broker's did.
        use sha2::Digest as _;
        let want = hex::encode(sha2::Sha256::digest(b"files-key-0123456789"));
        let r = up
            .call("tools/call", json!({"name": "whoami", "arguments": {}}), T)
            .await
            .unwrap();
        assert_eq!(text(&r), format!("key sha256 {}", &want[..16]));
        let r = up
            .call(
                "tools/call",
                json!({"name": "env_names", "arguments": {}}),
                T,
            )
            .await
            .unwrap();
        for name in text(&r).split(' ') {
            assert!(
                ["PATH", "HOME", "FILES_API_KEY", "LC_CTYPE"].contains(&name),
                "the child sees `{name}`"
            );
        }

        // A crash mid-call fails that call at once, and the next call after
        // the back-off starts the server again.
        let e = up
            .call("tools/call", json!({"name": "crash", "arguments": {}}), T)
            .await
            .unwrap_err();
        assert_eq!(e, UpstreamError::Exited("files".into()));
        let mut restarted = None;
        for _ in 0..100 {
            match up
                .call(
                    "tools/call",
                    json!({"name": "read_file", "arguments": {"path": "/x"}}),
                    T,
                )
                .await
            {
                Ok(r) => {
                    restarted = Some(r);
                    break;
                }
                Err(UpstreamError::Unavailable { why, .. }) => {
                    assert!(why.contains("it exited; it is started again"), "{why}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(other) => panic!("{other}"),
            }
        }
        assert!(text(&restarted.expect("restarted")).contains("/x"));

        // An unknown tool is the server's JSON-RPC error, passed on as such.
        let e = up
            .call("tools/call", json!({"name": "nope", "arguments": {}}), T)
            .await;
        let refused = match &e {
            Err(UpstreamError::Rpc { .. }) => true,
            Ok(r) => r["isError"] == json!(true),
            Err(_) => false,
        };
        assert!(refused, "{e:?}");
    }

    /// A server announcing `notifications/tools/list_changed` (a stdlib-only
    /// stdio server) moves the generation, so the gateway lists again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_list_changed_notice_moves_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s.py");
        std::fs::write(
            &script,
            r#"import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m:
        continue
    if m["method"] == "tools/call":
        print(json.dumps({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}), flush=True)
    r = {"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {"name": "n", "version": "1"}} if m["method"] == "initialize" else {}
    print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": r}), flush=True)
"#,
        )
        .unwrap();
        let mut s = spec(Vec::new());
        s.args = vec![script.display().to_string()];
        let up = StdioUpstream::new("n", s, secrets());
        up.call("tools/list", json!({}), T).await.unwrap();
        let before = up.generation();
        up.call("tools/list", json!({}), T).await.unwrap();
        assert_eq!(up.generation(), before, "nothing announced");
        up.call("tools/call", json!({"name": "x"}), T)
            .await
            .unwrap();
        assert!(up.generation() > before, "the notice is seen");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_secret_or_program_is_a_clear_error() {
        let s = secrets();
        let env = vec![(
            "FILES_API_KEY".to_owned(),
            EnvValue::Secret(SecretName::new("absent").unwrap()),
        )];
        let up = StdioUpstream::new("files", spec(env), s.clone());
        let e = up
            .call("tools/list", json!({}), T)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("warrant secret put absent"), "{e}");
        let mut bad = spec(Vec::new());
        bad.command = "/nonexistent/mcp-server".into();
        let up = StdioUpstream::new("ghost", bad, s);
        let e = up
            .call("tools/list", json!({}), T)
            .await
            .unwrap_err()
            .to_string();
        // The caller learns it cannot start; where and why (a host path)
        // is for the broker's log only.
        assert!(e.contains("cannot be started as configured"), "{e}");
        assert!(!e.contains("/nonexistent"), "{e}");
        assert!(check_sources(&up.spec, "ghost").unwrap_err().contains(
            "command `/nonexistent/mcp-server` (of [[mcp_server]] `ghost`) is not found"
        ));
    }
}
