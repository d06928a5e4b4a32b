//! The unix attestor: who is on the other end of the agent socket.
//!
//! Identity comes only from the kernel: the peer's pid, uid and gid from
//! `SO_PEERCRED` at accept time, the executable through `/proc/<pid>/exe`.
//! A pid names a process only while that process lives, so the process's start
//! time (`/proc/<pid>/stat` field 22) is read at accept, again before the
//! executable is read, and again after it is hashed: if the process exited, or
//! exited and its pid was reused, the start times differ (or `/proc/<pid>` is
//! gone) and the attestation fails. The executable is hashed through the open
//! `/proc/<pid>/exe` handle, i.e. the file the process runs, not whatever is at
//! its path now.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use warrant_core::identity::UnixFacts;

/// Why the process could not be attested. The text is safe for the caller: it
/// describes the caller's own process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnixError {
    /// The kernel did not give peer credentials.
    #[error("the kernel gave no peer credentials for this connection")]
    NoPeer,
    /// The process is gone or was replaced during attestation.
    #[error(
        "the connecting process (pid {0}) exited or was replaced during attestation; connect from the process that will use the identity, and keep it running"
    )]
    Changed(u32),
    /// `/proc` could not be read.
    #[error("cannot read the connecting process (pid {pid}): {why}")]
    Proc {
        /// The pid.
        pid: u32,
        /// Why (permission, missing).
        why: String,
    },
}

/// The process's start time in clock ticks after boot, from `/proc/<pid>/stat`.
pub fn start_time(pid: u32) -> Result<u64, UnixError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|_| UnixError::Changed(pid))?;
    // `comm` (field 2) is in parentheses and may hold spaces or ')': fields
    // after the last ')' are space-separated; start time is field 22.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or(UnixError::Changed(pid))?;
    rest.split_whitespace()
        .nth(19)
        .and_then(|v| v.parse().ok())
        .ok_or(UnixError::Changed(pid))
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A name from `/etc/passwd` or `/etc/group` for `id`.
fn name_of(file: &str, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _ = f.next();
        (f.next()?.parse::<u32>().ok()? == id).then(|| name.to_owned())
    })
}

/// Executable hashes keyed by the file's identity (device, inode, size,
/// change time), so a long-running fleet does not rehash a 50 MB interpreter
/// on every attestation, and a replaced file is hashed afresh.
#[derive(Debug, Default)]
pub struct HashCache {
    // A std mutex: held only for a map lookup or insert, never across IO.
    map: Mutex<HashMap<FileId, String>>,
}

/// Device, inode, size, change time (seconds, nanoseconds).
type FileId = (u64, u64, u64, i64, i64);

const MAX_CACHED: usize = 4096;

impl HashCache {
    fn hash(&self, file: &mut std::fs::File) -> std::io::Result<String> {
        let m = file.metadata()?;
        let key = (m.dev(), m.ino(), m.size(), m.ctime(), m.ctime_nsec());
        if let Some(h) = self.map.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(h);
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let h = hex::encode(hasher.finalize());
        if let Ok(mut c) = self.map.lock() {
            if c.len() >= MAX_CACHED {
                c.clear();
            }
            c.insert(key, h.clone());
        }
        Ok(h)
    }
}

/// What the kernel said at accept time.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// pid.
    pub pid: u32,
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// The process's start time when the connection was accepted.
    pub start_time: Option<u64>,
}

/// Attests the peer: blocking IO (reads `/proc` and the executable); run it
/// on a blocking thread.
pub fn attest(peer: Peer, cache: &HashCache) -> Result<UnixFacts, UnixError> {
    let pid = peer.pid;
    let at_accept = peer.start_time.ok_or(UnixError::Changed(pid))?;
    if start_time(pid)? != at_accept {
        return Err(UnixError::Changed(pid));
    }
    let exe_link = format!("/proc/{pid}/exe");
    let path = std::fs::read_link(&exe_link).map_err(|e| proc_error(pid, &e))?;
    let mut file = std::fs::File::open(&exe_link).map_err(|e| proc_error(pid, &e))?;
    let sha256 = cache.hash(&mut file).map_err(|e| proc_error(pid, &e))?;
    // The same process from accept to here: nothing was read from another.
    if start_time(pid)? != at_accept {
        return Err(UnixError::Changed(pid));
    }
    let path = path.to_string_lossy().into_owned();
    Ok(UnixFacts {
        uid: peer.uid,
        gid: peer.gid,
        user: name_of("/etc/passwd", peer.uid),
        group: name_of("/etc/group", peer.gid),
        pid,
        start_time: at_accept,
        boot_id: boot_id(),
        // A replaced or deleted executable shows as "<path> (deleted)": it can
        // never equal a registered path.
        path,
        sha256,
    })
}

fn proc_error(pid: u32, e: &std::io::Error) -> UnixError {
    match e.kind() {
        std::io::ErrorKind::NotFound => UnixError::Changed(pid),
        std::io::ErrorKind::PermissionDenied => UnixError::Proc {
            pid,
            why: "permission denied; the broker must run as root, as the agent's user, or with CAP_SYS_PTRACE to read another process's executable".into(),
        },
        _ => UnixError::Proc {
            pid,
            why: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attests_this_process() {
        let pid = std::process::id();
        let peer = Peer {
            pid,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            start_time: Some(start_time(pid).unwrap()),
        };
        let cache = HashCache::default();
        let facts = attest(peer, &cache).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(facts.path, exe.to_string_lossy());
        let bytes = std::fs::read(&exe).unwrap();
        assert_eq!(facts.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(attest(peer, &cache).unwrap(), facts, "cached hash");
        assert!(!facts.boot_id.is_empty());
    }

    #[test]
    fn a_different_start_time_is_a_different_process() {
        let pid = std::process::id();
        let peer = Peer {
            pid,
            uid: 0,
            gid: 0,
            start_time: Some(start_time(pid).unwrap() + 1),
        };
        assert_eq!(
            attest(peer, &HashCache::default()).unwrap_err(),
            UnixError::Changed(pid)
        );
        let gone = Peer {
            pid: u32::MAX - 1,
            start_time: Some(1),
            ..peer
        };
        assert!(matches!(
            attest(gone, &HashCache::default()),
            Err(UnixError::Changed(_))
        ));
    }

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        // comm may contain ") (": parse from the last ')'.
        let fields = "S 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        let stat = format!("42 (a) (b) {fields}");
        let rest = stat.rsplit_once(')').unwrap().1;
        assert_eq!(rest.split_whitespace().nth(19), Some("123456"));
    }
}
