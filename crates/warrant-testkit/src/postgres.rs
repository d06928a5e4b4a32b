//! A fresh database on the test PostgreSQL server (scripts/postgres).

use std::path::Path;

/// The test server's URL: `WARRANT_TEST_POSTGRES`, or the one
/// `scripts/postgres start` wrote last.
pub fn server_url() -> String {
    std::env::var("WARRANT_TEST_POSTGRES")
        .ok()
        .or_else(|| {
            let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-postgres.url");
            std::fs::read_to_string(f).ok().map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server for the tests: run the suite with scripts/test, or start one with `scripts/postgres start`"
            )
        })
}

/// An empty database, dropped (with its connections) when this is.
#[derive(Debug)]
pub struct Database {
    /// Its URL, with credentials.
    pub url: String,
    name: String,
}

fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    // The blocking client runs its own runtime: never on a tokio thread.
    match std::thread::spawn(f).join() {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e),
    }
}

impl Database {
    /// Creates one.
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let server = server_url();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "w_{nanos:x}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let (base, _) = server.rsplit_once('/').unwrap_or((&server, ""));
        let url = format!("{base}/{name}");
        let n = name.clone();
        on_thread(move || {
            let mut c = postgres::Client::connect(&server, postgres::NoTls)
                .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL: {e}"));
            c.batch_execute(&format!("CREATE DATABASE {n}"))
                .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
        });
        Self { url, name }
    }

    /// Runs `sql` directly, as an operator (or an attacker) with the
    /// database's credentials would.
    pub fn sql(&self, sql: &str) -> Result<(), String> {
        let (url, sql) = (self.url.clone(), sql.to_owned());
        on_thread(move || {
            let mut c =
                postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
            c.batch_execute(&sql).map_err(|e| e.to_string())
        })
    }

    /// The first column of the first row of `sql`, as text.
    pub fn one(&self, sql: &str) -> Option<String> {
        let (url, sql) = (self.url.clone(), sql.to_owned());
        on_thread(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).ok()?;
            let rows = c.simple_query(&sql).ok()?;
            rows.iter().find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
        })
    }
}

impl Default for Database {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (server, name) = (server_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(&server, postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        })
        .join();
    }
}

/// A TCP relay to the test server that a test can cut, as a network
/// partition between one broker and its database would.
#[derive(Debug)]
pub struct Relay {
    /// The relay's address (`127.0.0.1:<port>`).
    pub addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    /// Relays to the host and port of `url`.
    pub fn to(url: &str) -> Self {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let after = url.rsplit_once('@').map_or(url, |(_, h)| h);
        let target = after.split('/').next().unwrap_or_default().to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let (c, o) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if c.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let pump = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                let clones = (
                    client.try_clone(),
                    server.try_clone(),
                    client.try_clone(),
                    server.try_clone(),
                );
                if let (Ok(c1), Ok(s1), Ok(c2), Ok(s2)) = clones {
                    o.lock().unwrap().extend([c1, s1]);
                    pump(client, s2);
                    pump(server, c2);
                }
            }
        });
        Self { addr, cut, open }
    }

    /// `url` with its host and port replaced by the relay's.
    pub fn url(&self, url: &str) -> String {
        let (scheme_auth, rest) = url.rsplit_once('@').unwrap();
        let path = rest.split_once('/').map_or("", |(_, p)| p);
        format!("{scheme_auth}@{}/{path}", self.addr)
    }

    /// Cuts every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Release);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Relays again.
    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::Release);
    }
}
