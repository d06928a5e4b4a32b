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

use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

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
    /// The process runs another program than when it connected.
    #[error(
        "the connecting process (pid {0}) runs another program than when it connected; a process gets an identity only for the program it ran when it connected"
    )]
    Execed(u32),
    /// Bytes of the request came from another process.
    #[error(
        "the request was sent by another process than the one that connected (a shared or passed connection); send the request from the process that connects"
    )]
    Foreign,
    /// The process runs in another user namespace.
    #[error(
        "the connecting process (pid {0}) runs in another user namespace than the broker (a rootless container, or `unshare -U`), where a process may claim another's credentials; the unix attestor cannot vouch for it: use the oidc or join attestor"
    )]
    Namespace(u32),
    /// The executable is too large to hash.
    #[error(
        "the connecting process's executable is {bytes} bytes, over the {MAX_EXE_BYTES} the unix attestor hashes; attest it with another attestor"
    )]
    TooLarge {
        /// Its size.
        bytes: u64,
    },
    /// Hashing is busy: this user's, or too many users', executables are
    /// being hashed now.
    #[error(
        "the broker is hashing other executables of this user, or of others, right now; try again shortly"
    )]
    Busy,
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
///
/// Hashing is bounded, since any local user can connect with any file:
/// executables over [`MAX_EXE_BYTES`] are refused, at most
/// [`MAX_HASHING`] are hashed at once and at most one per user, and a
/// hash whose request was given up stops at its next chunk.
#[derive(Debug, Default)]
pub struct HashCache {
    // A std mutex: held only for a map lookup or insert, never across IO.
    map: Mutex<HashMap<FileId, String>>,
    /// The users whose executable is being hashed now.
    hashing: Mutex<std::collections::HashSet<u32>>,
    /// Bytes hashed per user in the current minute.
    spent: Mutex<HashMap<u32, (std::time::Instant, u64)>>,
}

/// How many bytes of executables one user may have hashed per minute
/// (files already hashed are free): 4 GiB, far more than any fleet of
/// agents starting needs, far less than a CPU core spent on hashing.
pub const MAX_BYTES_PER_MINUTE: u64 = 4 << 30;

/// The largest executable hashed: 1 GiB.
pub const MAX_EXE_BYTES: u64 = 1 << 30;
/// How many executables are hashed at once, all users together.
pub const MAX_HASHING: usize = 2;

/// Removes a user from the set being hashed when the hash ends.
struct Hashing<'a> {
    set: &'a Mutex<std::collections::HashSet<u32>>,
    uid: u32,
}

impl Drop for Hashing<'_> {
    fn drop(&mut self) {
        {
            let mut s = self.set.lock();
            s.remove(&self.uid);
        }
    }
}

/// Device, inode, size, change time (seconds, nanoseconds).
type FileId = (u64, u64, u64, i64, i64);

const MAX_CACHED: usize = 4096;

impl HashCache {
    fn hash(
        &self,
        file: &mut std::fs::File,
        pid: u32,
        uid: u32,
        cancelled: &std::sync::atomic::AtomicBool,
    ) -> Result<String, UnixError> {
        let m = file.metadata().map_err(|e| proc_error(pid, &e))?;
        let key = (m.dev(), m.ino(), m.size(), m.ctime(), m.ctime_nsec());
        if let Some(h) = self.map.lock().get(&key).cloned() {
            return Ok(h);
        }
        if m.size() > MAX_EXE_BYTES {
            return Err(UnixError::TooLarge { bytes: m.size() });
        }
        {
            let mut spent = self.spent.lock();
            let now = std::time::Instant::now();
            let e = spent.entry(uid).or_insert((now, 0));
            if now.duration_since(e.0) >= std::time::Duration::from_secs(60) {
                *e = (now, 0);
            }
            if e.1.saturating_add(m.size()) > MAX_BYTES_PER_MINUTE {
                return Err(UnixError::Busy);
            }
            e.1 += m.size();
            if spent.len() > 4096 {
                spent.retain(|_, (t, _)| {
                    now.duration_since(*t) < std::time::Duration::from_secs(60)
                });
            }
        }
        let _slot = {
            let mut set = self.hashing.lock();
            if set.contains(&uid) || set.len() >= MAX_HASHING {
                return Err(UnixError::Busy);
            }
            set.insert(uid);
            Hashing {
                set: &self.hashing,
                uid,
            }
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(UnixError::Changed(pid));
            }
            let n = file.read(&mut buf).map_err(|e| proc_error(pid, &e))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            // The file may have grown since its size was read.
            if total > MAX_EXE_BYTES {
                return Err(UnixError::TooLarge { bytes: total });
            }
            hasher.update(&buf[..n]);
        }
        let h = hex::encode(hasher.finalize());
        {
            let mut c = self.map.lock();
            if c.len() >= MAX_CACHED {
                c.clear();
            }
            c.insert(key, h.clone());
        }
        Ok(h)
    }
}

/// What the kernel said at accept time.
#[derive(Debug, Clone)]
pub struct Peer {
    /// pid.
    pub pid: u32,
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// The process's start time when the connection was accepted.
    pub start_time: Option<u64>,
    /// The file the process ran at accept: device and inode.
    pub exe: Option<(u64, u64)>,
    /// Whether nothing was queued when the broker looked at the process:
    /// then every byte of the request was sent after it looked.
    pub sent_after_look: bool,
    /// The process, pinned (so a recycled pid is never mistaken for it).
    pub pidfd: Option<std::sync::Arc<rustix::fd::OwnedFd>>,
    /// Set if a byte came from any other process than `pid`.
    pub foreign: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Peer {
    /// Reads the peer of a just-accepted connection: credentials, pidfd,
    /// start time, the file it runs, then (after all of them) whether
    /// anything is queued, and turns on sender credentials for every read.
    pub fn accept(stream: &tokio::net::UnixStream) -> Option<Self> {
        use std::os::fd::AsFd as _;
        let cred = rustix::net::sockopt::socket_peercred(stream.as_fd()).ok()?;
        let pid = u32::try_from(cred.pid.as_raw_nonzero().get()).ok()?;
        let _ = rustix::net::sockopt::set_socket_passcred(stream.as_fd(), true);
        let pidfd = rustix::process::pidfd_open(cred.pid, rustix::process::PidfdFlags::empty())
            .ok()
            .map(std::sync::Arc::new);
        let start_time = start_time(pid).ok();
        let exe = exe_id(pid).ok();
        // INVARIANT (look before the request): queued bytes are counted
        // after the file is noted, so bytes not yet queued were sent after
        // the broker saw which file the process ran.
        let sent_after_look = rustix::io::ioctl_fionread(stream.as_fd()).is_ok_and(|n| n == 0);
        Some(Self {
            pid,
            uid: cred.uid.as_raw(),
            gid: cred.gid.as_raw(),
            start_time,
            exe,
            sent_after_look,
            pidfd,
            foreign: std::sync::Arc::default(),
        })
    }

    /// Whether the pinned process has exited.
    pub fn exited(&self) -> bool {
        let Some(fd) = &self.pidfd else {
            return false;
        };
        let mut fds = [rustix::event::PollFd::new(
            fd.as_ref(),
            rustix::event::PollFlags::IN,
        )];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
    }
}

/// The device and inode of the file process `pid` runs.
pub fn exe_id(pid: u32) -> Result<(u64, u64), UnixError> {
    let m = std::fs::metadata(format!("/proc/{pid}/exe")).map_err(|e| proc_error(pid, &e))?;
    Ok((m.dev(), m.ino()))
}

/// Attests the peer: blocking IO (reads `/proc` and the executable); run it
/// on a blocking thread. Hashing stops once `cancelled` is set (the request
/// was given up).
pub fn attest(
    peer: &Peer,
    cache: &HashCache,
    cancelled: &std::sync::atomic::AtomicBool,
) -> Result<UnixFacts, UnixError> {
    use std::sync::atomic::Ordering;
    let pid = peer.pid;
    if peer.foreign.load(Ordering::Acquire) {
        return Err(UnixError::Foreign);
    }
    let at_accept = peer.start_time.ok_or(UnixError::Changed(pid))?;
    if peer.exited() || start_time(pid)? != at_accept {
        return Err(UnixError::Changed(pid));
    }
    // INVARIANT (credentials from the kernel, not the sender): in a user
    // namespace of its own, a process may send any pid of its pid namespace
    // as its credentials, so a sender there could pass as the pinned
    // process. Every process of such a pid namespace is in such a user
    // namespace; only processes in the broker's own are attested.
    if namespace_of(pid, "user")? != own_user_namespace()? {
        return Err(UnixError::Namespace(pid));
    }
    let exe_link = format!("/proc/{pid}/exe");
    let path = std::fs::read_link(&exe_link).map_err(|e| proc_error(pid, &e))?;
    let mut file = std::fs::File::open(&exe_link).map_err(|e| proc_error(pid, &e))?;
    // The file hashed is the file the process ran when it connected.
    let m = file.metadata().map_err(|e| proc_error(pid, &e))?;
    if peer.exe != Some((m.dev(), m.ino())) {
        return Err(UnixError::Execed(pid));
    }
    let sha256 = cache.hash(&mut file, pid, peer.uid, cancelled)?;
    let cgroup = placed_cgroup(pid);
    // The same process from accept to here: nothing was read from another.
    if peer.exited() || start_time(pid)? != at_accept || exe_id(pid)? != (m.dev(), m.ino()) {
        return Err(UnixError::Changed(pid));
    }
    if peer.foreign.load(Ordering::Acquire) {
        return Err(UnixError::Foreign);
    }
    // INVARIANT (a path the broker can check): `/proc/<pid>/exe` names the
    // file in the process's own mount namespace, where a bind mount can put
    // any file at an agent's path; the path counts only if, as the broker
    // sees it, it is the very file the process runs.
    let same_here =
        std::fs::metadata(&path).is_ok_and(|h| (h.dev(), h.ino()) == (m.dev(), m.ino()));
    let path = if same_here {
        path.to_string_lossy().into_owned()
    } else {
        format!(
            "{} (not the file at that path for the broker)",
            path.to_string_lossy()
        )
    };
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
        cgroup,
    })
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a hybrid system), read once.
fn cgroup2_mount() -> Option<&'static str> {
    static MOUNT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    MOUNT
        .get_or_init(|| {
            let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            // `id parent major:minor root mount-point options ... - fstype source super`
            info.lines().find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                (right.split(' ').next() == Some("cgroup2"))
                    .then(|| left.split(' ').nth(4).map(str::to_owned))
                    .flatten()
            })
        })
        .as_deref()
}

/// The cgroup v2 path of process `pid`, if the system placed it there: the
/// cgroup's `cgroup.procs` is owned by root and writable by no one else.
/// Moving a process into a cgroup needs write access there, and a user can
/// make root own nothing, so a process of an unprivileged uid cannot have
/// chosen such a cgroup. (Ownership by anyone but root proves nothing: a
/// user with a delegated subtree can hand its files to a subordinate uid
/// from a user namespace of its own.) `None` under cgroup v1 or when the
/// files cannot be read.
fn placed_cgroup(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    if !path.starts_with('/') || path.split('/').any(|seg| seg == "..") {
        return None;
    }
    let procs = std::fs::metadata(format!("{}{path}/cgroup.procs", cgroup2_mount()?)).ok()?;
    let placed = procs.uid() == 0 && procs.mode() & 0o022 == 0;
    placed.then(|| path.to_owned())
}

/// The identity (device, inode) of a namespace of process `pid`.
fn namespace_of(pid: u32, kind: &str) -> Result<(u64, u64), UnixError> {
    let m = std::fs::metadata(format!("/proc/{pid}/ns/{kind}")).map_err(|e| proc_error(pid, &e))?;
    Ok((m.dev(), m.ino()))
}

/// The broker's own user namespace (`None` if `/proc` does not say, which
/// then matches no process).
fn own_user_namespace() -> Result<(u64, u64), UnixError> {
    static OWN: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
    let own = OWN.get_or_init(|| {
        std::fs::metadata("/proc/self/ns/user")
            .ok()
            .map(|m| (m.dev(), m.ino()))
    });
    own.ok_or(UnixError::Proc {
        pid: std::process::id(),
        why: "cannot read the broker's own user namespace".into(),
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

/// An agent-socket connection whose every read checks who sent the bytes:
/// a byte from another process than the connecting one marks the peer
/// `foreign` (and so refuses the request).
#[derive(Debug)]
pub struct PeerStream {
    inner: tokio::net::UnixStream,
    pid: u32,
    uid: u32,
    gid: u32,
    foreign: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl PeerStream {
    /// Wraps `inner`, whose peer is `peer`.
    pub fn new(inner: tokio::net::UnixStream, peer: &Peer) -> Self {
        Self {
            inner,
            pid: peer.pid,
            uid: peer.uid,
            gid: peer.gid,
            foreign: peer.foreign.clone(),
        }
    }

    fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::fd::AsFd as _;
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
        let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let got = rustix::net::recvmsg(
            self.inner.as_fd(),
            &mut iov,
            &mut control,
            rustix::net::RecvFlags::DONTWAIT | rustix::net::RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        let mut sender_ok = false;
        for msg in control.drain() {
            match msg {
                rustix::net::RecvAncillaryMessage::ScmCredentials(c) => {
                    sender_ok = u32::try_from(c.pid.as_raw_nonzero().get()).ok() == Some(self.pid)
                        && c.uid.as_raw() == self.uid
                        && c.gid.as_raw() == self.gid;
                }
                // Passed descriptors: not part of this protocol.
                _ => sender_ok = false,
            }
        }
        if got.bytes > 0 && (!sender_ok || got.flags.contains(rustix::net::ReturnFlags::CTRUNC)) {
            self.foreign
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(got.bytes)
    }
}

impl tokio::io::AsyncRead for PeerStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.inner.poll_read_ready(cx) {
                std::task::Poll::Pending => return std::task::Poll::Pending,
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                std::task::Poll::Ready(Ok(())) => {}
            }
            let unfilled = buf.initialize_unfilled();
            match this
                .inner
                .try_io(tokio::io::Interest::READABLE, || this.recv(unfilled))
            {
                Ok(n) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return std::task::Poll::Ready(Err(e)),
            }
        }
    }
}

impl tokio::io::AsyncWrite for PeerStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static NO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// Found after the fix of item 2: any local user could make the broker
    /// hash a huge (sparse) file, on as many threads as connections, and a
    /// hash went on after its request was given up.
    #[test]
    fn hashing_is_bounded_in_size_concurrency_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_EXE_BYTES + 1).unwrap();
        let cache = HashCache::default();
        let open = |p: &std::path::Path| std::fs::File::open(p).unwrap();
        assert!(matches!(
            cache.hash(&mut open(&big), 1, 1000, &NO),
            Err(UnixError::TooLarge { .. })
        ));
        let small = dir.path().join("small");
        std::fs::write(&small, b"#!/bin/sh\n").unwrap();
        // One hash per user at a time, and a bounded number in all.
        cache.hashing.lock().insert(1000);
        assert_eq!(
            cache.hash(&mut open(&small), 1, 1000, &NO),
            Err(UnixError::Busy)
        );
        assert!(cache.hash(&mut open(&small), 1, 1001, &NO).is_ok());
        cache.hashing.lock().insert(1002);
        let other = dir.path().join("other");
        std::fs::write(&other, b"other").unwrap();
        assert_eq!(
            cache.hash(&mut open(&other), 1, 1003, &NO),
            Err(UnixError::Busy)
        );
        cache.hashing.lock().clear();
        // Found in the second round: a user could keep a core hashing, one
        // bounded file after another. Each user has a budget per minute.
        cache
            .spent
            .lock()
            .insert(1004, (std::time::Instant::now(), MAX_BYTES_PER_MINUTE));
        assert_eq!(
            cache.hash(&mut open(&other), 1, 1004, &NO),
            Err(UnixError::Busy)
        );
        // A given-up request stops hashing.
        let stop = std::sync::atomic::AtomicBool::new(true);
        assert_eq!(
            cache.hash(&mut open(&other), 1, 1003, &stop),
            Err(UnixError::Changed(1))
        );
        assert!(cache.hashing.lock().is_empty(), "the slot is freed");
    }

    fn me() -> Peer {
        let pid = std::process::id();
        Peer {
            pid,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            start_time: Some(start_time(pid).unwrap()),
            exe: Some(exe_id(pid).unwrap()),
            sent_after_look: true,
            pidfd: rustix::process::pidfd_open(
                rustix::process::getpid(),
                rustix::process::PidfdFlags::empty(),
            )
            .ok()
            .map(std::sync::Arc::new),
            foreign: std::sync::Arc::default(),
        }
    }

    #[test]
    fn attests_this_process() {
        let peer = me();
        assert!(!peer.exited());
        let cache = HashCache::default();
        let facts = attest(&peer, &cache, &NO).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(facts.path, exe.to_string_lossy());
        let bytes = std::fs::read(&exe).unwrap();
        assert_eq!(facts.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(attest(&peer, &cache, &NO).unwrap(), facts, "cached hash");
        assert!(!facts.boot_id.is_empty());
    }

    #[test]
    fn a_different_start_time_is_a_different_process() {
        let pid = std::process::id();
        let mut peer = me();
        peer.start_time = Some(start_time(pid).unwrap() + 1);
        assert_eq!(
            attest(&peer, &HashCache::default(), &NO).unwrap_err(),
            UnixError::Changed(pid)
        );
        let gone = Peer {
            pid: u32::MAX - 1,
            start_time: Some(1),
            pidfd: None,
            ..me()
        };
        assert!(matches!(
            attest(&gone, &HashCache::default(), &NO),
            Err(UnixError::Changed(_))
        ));
    }

    #[test]
    fn another_program_or_sender_is_refused() {
        let mut peer = me();
        peer.exe = Some((0, 1));
        assert_eq!(
            attest(&peer, &HashCache::default(), &NO).unwrap_err(),
            UnixError::Execed(std::process::id())
        );
        let peer = me();
        peer.foreign
            .store(true, std::sync::atomic::Ordering::Release);
        assert_eq!(
            attest(&peer, &HashCache::default(), &NO).unwrap_err(),
            UnixError::Foreign
        );
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
