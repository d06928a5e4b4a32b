//! The data directory: where the store, the KEK file, sockets and runtime
//! information live.
//!
//! It holds the keys to everything the broker issues, so it must belong to the
//! user running the broker and be closed to everyone else: mode 0711, so other
//! users can reach the agent socket by name but never list or read anything,
//! and every file in it 0600. A broker
//! refuses to start on a directory that is not, rather than fixing it silently:
//! wrong permissions mean someone else may already have read it. One broker at a
//! time uses a directory, enforced by a lock on `<data-dir>/lock`.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use warrant_token::Kek;

/// Why the data directory can't be used. Each message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Creating or inspecting it failed.
    #[error("data directory `{path}` is unusable: {why}")]
    Unusable {
        /// The path.
        path: PathBuf,
        /// Why, and what to do.
        why: String,
    },
    /// It or a file in it is open to other users.
    #[error(
        "`{path}` has mode {mode:04o}, so other users can reach it; it holds signing keys and the audit trail and must be private: run `chmod {want:o} {path}`"
    )]
    Permissions {
        /// The path.
        path: PathBuf,
        /// Its mode.
        mode: u32,
        /// The mode to set.
        want: u32,
    },
    /// Another user owns it.
    #[error(
        "`{path}` belongs to uid {owner}, but warrant runs as uid {me}; run warrant as its owner or `chown` it"
    )]
    Owner {
        /// The path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our uid.
        me: u32,
    },
    /// Another broker holds the lock.
    #[error(
        "another `warrant serve` is already using data directory `{path}`{pid}; stop it or choose another --data-dir"
    )]
    Locked {
        /// The path.
        path: PathBuf,
        /// " (pid N)" if known.
        pid: String,
    },
    /// The KEK file exists but is not valid.
    #[error("`{path}`: {error}")]
    Kek {
        /// The file.
        path: PathBuf,
        /// Why (in the message, so not also a `source()`).
        error: warrant_token::KeyError,
    },
}

/// Facts about a running broker, written to `<data-dir>/run.json` once it listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The broker's process id.
    pub pid: u32,
    /// The bound API address.
    pub api_addr: String,
    /// The bound edge address.
    pub edge_addr: String,
    /// The issuer.
    pub issuer: String,
    /// The admin socket.
    pub admin_socket: PathBuf,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// warrant's version.
    pub version: String,
}

/// The admin socket of a data directory.
pub fn admin_socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.sock")
}

/// The run file of a data directory.
pub fn run_file_path(data_dir: &Path) -> PathBuf {
    data_dir.join("run.json")
}

/// Reads a data directory's run file, if a broker wrote one.
pub fn read_run_info(data_dir: &Path) -> Option<RunInfo> {
    fs::read(run_file_path(data_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Where the KEK came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KekSource {
    /// `WARRANT_KEK`.
    Environment,
    /// An existing `<data-dir>/kek`.
    File,
    /// `<data-dir>/kek`, created now.
    Created,
}

/// An opened, locked data directory.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    /// Held for the broker's life; the OS releases it if the process dies.
    _lock: File,
}

fn unusable(path: &Path, why: impl Into<String>) -> DataDirError {
    DataDirError::Unusable {
        path: path.to_owned(),
        why: why.into(),
    }
}

/// The data directory's mode: owner-only, except that others may traverse it
/// (never list or read it) to reach the agent socket, which local agents of
/// other users connect to. Every file in it is 0600.
pub const DATA_DIR_MODE: u32 = 0o711;

/// Refuses `path` if another user owns it or if it has any bit of `forbidden`
/// (suggesting `want`).
fn check_private(path: &Path, meta: &fs::Metadata, want: u32) -> Result<(), DataDirError> {
    check_mode(path, meta, want, 0o077)
}

fn check_mode(
    path: &Path,
    meta: &fs::Metadata,
    want: u32,
    forbidden: u32,
) -> Result<(), DataDirError> {
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me && me != 0 {
        return Err(DataDirError::Owner {
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & forbidden != 0 {
        return Err(DataDirError::Permissions {
            path: path.to_owned(),
            mode,
            want,
        });
    }
    Ok(())
}

impl DataDir {
    /// Creates the directory (mode 0700) if missing, checks ownership and
    /// permissions, checks it is writable, and takes the lock.
    pub fn open(root: &Path) -> Result<Self, DataDirError> {
        match fs::metadata(root) {
            Ok(meta) if !meta.is_dir() => {
                return Err(unusable(root, "it exists and is not a directory"));
            }
            Ok(meta) => check_mode(root, &meta, DATA_DIR_MODE, 0o066)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(DATA_DIR_MODE)
                    .create(root)
                    .map_err(|e| unusable(root, format!("cannot create it: {e}")))?;
                // The umask may have taken the traverse bits; set them exactly.
                fs::set_permissions(root, fs::Permissions::from_mode(DATA_DIR_MODE))
                    .map_err(|e| unusable(root, format!("cannot set its mode: {e}")))?;
                tracing::info!(path = %root.display(), "created data directory");
            }
            Err(e) => return Err(unusable(root, e.to_string())),
        }
        let probe = root.join(".write-test");
        fs::write(&probe, b"")
            .and_then(|()| fs::remove_file(&probe))
            .map_err(|e| unusable(root, format!("it is not writable: {e}")))?;

        let lock_path = root.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| unusable(root, format!("cannot open `{}`: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let pid = read_run_info(root)
                    .map(|r| format!(" (pid {})", r.pid))
                    .unwrap_or_default();
                return Err(DataDirError::Locked {
                    path: root.to_owned(),
                    pid,
                });
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(unusable(root, format!("cannot lock it: {e}")));
            }
        }
        Ok(Self {
            root: root.to_owned(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite database.
    pub fn db_path(&self) -> PathBuf {
        self.root.join("warrant.db")
    }

    /// `<data-dir>/agent.sock`: the unix attestor, open to every local user.
    pub fn agent_socket(&self) -> PathBuf {
        self.root.join("agent.sock")
    }

    /// `<data-dir>/workload.sock`: the SPIFFE Workload API (gRPC), open to
    /// every local user like the agent socket.
    pub fn workload_socket(&self) -> PathBuf {
        self.root.join("workload.sock")
    }

    /// The admin socket.
    pub fn admin_socket(&self) -> PathBuf {
        admin_socket_path(&self.root)
    }

    /// The KEK from `from_env`, or from `<data-dir>/kek`, creating it (mode
    /// 0600) on first start.
    pub fn kek(
        &self,
        from_env: Option<std::sync::Arc<Kek>>,
    ) -> Result<(std::sync::Arc<Kek>, KekSource), DataDirError> {
        if let Some(k) = from_env {
            return Ok((k, KekSource::Environment));
        }
        let path = self.root.join("kek");
        match fs::metadata(&path) {
            Ok(meta) => {
                check_private(&path, &meta, 0o600)?;
                let text = zeroize::Zeroizing::new(fs::read_to_string(&path).map_err(|e| {
                    unusable(&self.root, format!("cannot read `{}`: {e}", path.display()))
                })?);
                let kek = Kek::from_base64(&text).map_err(|error| DataDirError::Kek {
                    path: path.clone(),
                    error,
                })?;
                Ok((std::sync::Arc::new(kek), KekSource::File))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let kek = Kek::generate().map_err(|error| DataDirError::Kek {
                    path: path.clone(),
                    error,
                })?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| {
                        unusable(
                            &self.root,
                            format!("cannot create `{}`: {e}", path.display()),
                        )
                    })?;
                f.write_all(kek.to_base64().as_bytes())
                    .and_then(|()| f.write_all(b"\n"))
                    .and_then(|()| f.sync_all())
                    .map_err(|e| {
                        unusable(
                            &self.root,
                            format!("cannot write `{}`: {e}", path.display()),
                        )
                    })?;
                Ok((std::sync::Arc::new(kek), KekSource::Created))
            }
            Err(e) => Err(unusable(
                &self.root,
                format!("cannot inspect `{}`: {e}", path.display()),
            )),
        }
    }

    /// Writes `run.json` (replacing it atomically).
    pub fn write_run_info(&self, info: &RunInfo) -> std::io::Result<()> {
        let tmp = self.root.join("run.json.tmp");
        let body = serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        fs::rename(&tmp, run_file_path(&self.root))
    }

    /// Removes the socket and run file on a clean stop.
    pub fn remove_runtime_files(&self) {
        let _ = fs::remove_file(self.admin_socket());
        let _ = fs::remove_file(run_file_path(&self.root));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_directory_and_kek() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        let dd = DataDir::open(&root).unwrap();
        assert_eq!(
            fs::metadata(&root).unwrap().permissions().mode() & 0o777,
            0o711
        );
        let (k1, src) = dd.kek(None).unwrap();
        assert_eq!(src, KekSource::Created);
        assert_eq!(
            fs::metadata(root.join("kek")).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (k2, src) = dd.kek(None).unwrap();
        assert_eq!(src, KekSource::File);
        let sealed = k1.seal(b"a", b"b").unwrap();
        assert!(
            k2.open(b"a", &sealed).is_some(),
            "the same KEK is read back"
        );
    }

    #[test]
    fn refuses_an_open_directory_naming_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let e = DataDir::open(&root).unwrap_err().to_string();
        assert!(e.contains("mode 0755"), "{e}");
        assert!(e.contains(&format!("chmod 711 {}", root.display())), "{e}");
        // Owner-only, and traverse-only for others, are both fine.
        for ok in [0o700, 0o711] {
            fs::set_permissions(&root, fs::Permissions::from_mode(ok)).unwrap();
            drop(DataDir::open(&root).unwrap());
        }
    }

    #[test]
    fn refuses_a_file_and_a_readable_kek() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"").unwrap();
        assert!(
            DataDir::open(&file)
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );

        let root = tmp.path().join("data");
        let dd = DataDir::open(&root).unwrap();
        dd.kek(None).unwrap();
        fs::set_permissions(root.join("kek"), fs::Permissions::from_mode(0o644)).unwrap();
        let e = dd.kek(None).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        fs::set_permissions(root.join("kek"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(root.join("kek"), "short").unwrap();
        let e = dd.kek(None).unwrap_err().to_string();
        assert!(e.contains("32 random bytes"), "{e}");
        assert!(
            !e.contains("short"),
            "the file's contents are not echoed: {e}"
        );
    }

    #[test]
    fn one_broker_per_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        let _first = DataDir::open(&root).unwrap();
        let e = DataDir::open(&root).unwrap_err();
        assert!(matches!(e, DataDirError::Locked { .. }), "{e}");
    }
}
