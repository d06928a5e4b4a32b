//! What the broker trusts on its own machine: a file it reads as
//! configuration or code must be changeable only by the broker's user or
//! root, as OpenSSH checks the files it trusts.
//!
//! Deliberately not here: what the files mean. The data directory's own,
//! stricter rules (0700/0600, one broker at a time) are in warrant-server.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Checks that a file (or directory) the broker trusts from outside its
/// data directory (the configuration, policies, an issuer's keys, CA
/// certificates, an MCP server's program and script) can be changed only by
/// the broker's user or root: the file, after symlinks, and every directory
/// above it must belong to one of them and be writable by no one else, as
/// OpenSSH checks the files it trusts. A directory with the sticky bit (like
/// `/tmp`) may be writable by others, since they cannot replace what they do
/// not own there, except right above a `program`, whose directory an
/// interpreter searches for what it imports. Whoever can write such a file
/// decides what the broker trusts, so it is refused, as a data directory
/// open to others is.
pub fn check_trusted(path: &Path, what: &str, program: bool) -> Result<(), String> {
    check_trusted_as(
        path,
        what,
        if program { Trust::Program } else { Trust::Data },
    )
}

/// What a trusted path is to the broker, which decides how strict the
/// check of the directories above it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Read as data: a sticky shared directory anywhere above is fine.
    Data,
    /// Run: not in a shared directory, since interpreters import from a
    /// script's directory.
    Program,
    /// A directory code is loaded from: not shared itself, sticky or not.
    CodeDir,
}

/// [`check_trusted`], for a path of any [`Trust`].
pub fn check_trusted_as(path: &Path, what: &str, trust: Trust) -> Result<(), String> {
    let program = trust == Trust::Program;
    let me = rustix::process::geteuid().as_raw();
    check_links(path, what, me)?;
    let real = fs::canonicalize(path)
        .map_err(|e| format!("cannot read {what} `{}`: {e}", path.display()))?;
    for (depth, p) in real.ancestors().enumerate() {
        let m = fs::metadata(p).map_err(|e| format!("{what} `{}`: {e}", p.display()))?;
        let mode = m.permissions().mode() & 0o7777;
        if m.uid() != me && m.uid() != 0 {
            return Err(format!(
                "{what} `{}`: `{}` belongs to uid {}; what the broker trusts, and every directory above it, must belong to its own user (uid {me}) or root",
                path.display(),
                p.display(),
                m.uid()
            ));
        }
        let sticky_ok = m.is_dir()
            && mode & 0o1000 != 0
            && !(program && depth == 1)
            && !(trust == Trust::CodeDir && depth == 0);
        if mode & 0o022 != 0 && !sticky_ok {
            return Err(format!(
                "{what} `{}`: `{}` can be written by others (mode {mode:o}), who would then decide what the broker trusts; `chmod go-w {}`{}",
                path.display(),
                p.display(),
                p.display(),
                if program && depth == 1 && m.is_dir() && mode & 0o1000 != 0 {
                    ", or move the program out of a shared directory"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(())
}

/// Every symbolic link met on the way to `path` (in the path as given and in
/// the targets of links) must belong to the broker's user or root: a link
/// another user owns, in a sticky shared directory, could be pointed
/// elsewhere between this check and the read, so what was checked would
/// not be what is read.
fn check_links(path: &Path, what: &str, me: u32) -> Result<(), String> {
    use std::ffi::OsString;
    use std::path::{Component, PathBuf};
    let start = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("{what} `{}`: {e}", path.display()))?
            .join(path)
    };
    let push = |rest: &mut Vec<OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => rest.push(n.to_owned()),
                Component::ParentDir => rest.push("..".into()),
                _ => {}
            }
        }
    };
    let mut rest: Vec<OsString> = Vec::new();
    push(&mut rest, &start);
    let mut cur = PathBuf::from("/");
    let mut hops = 0;
    while let Some(c) = rest.pop() {
        if c == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&c);
        let Ok(m) = fs::symlink_metadata(&next) else {
            // What does not exist is reported by the check that follows.
            return Ok(());
        };
        if !m.file_type().is_symlink() {
            cur = next;
            continue;
        }
        hops += 1;
        if hops > 40 {
            return Err(format!(
                "{what} `{}`: too many symbolic links",
                path.display()
            ));
        }
        if m.uid() != me && m.uid() != 0 {
            return Err(format!(
                "{what} `{}`: the symbolic link `{}` belongs to uid {}; a link on the way to what the broker trusts must belong to its own user (uid {me}) or root, who alone may repoint it",
                path.display(),
                next.display(),
                m.uid()
            ));
        }
        let target =
            fs::read_link(&next).map_err(|e| format!("{what} `{}`: {e}", next.display()))?;
        if target.is_absolute() {
            cur = PathBuf::from("/");
        }
        push(&mut rest, &target);
    }
    Ok(())
}

/// The most entries [`check_code_tree`] looks at under one directory.
const CODE_TREE_LIMIT: usize = 200_000;

/// Checks a directory code is loaded from (an interpreter's script
/// directory, a `PYTHONPATH` entry) and everything under it: an importer
/// reads any file there, so every one must be as trusted as a program.
/// Links are checked where they lead (and the directories above that),
/// without descending into a linked directory.
pub fn check_code_tree(dir: &Path, what: &str) -> Result<(), String> {
    check_trusted_as(dir, what, Trust::CodeDir)?;
    let me = rustix::process::geteuid().as_raw();
    let root = fs::canonicalize(dir).map_err(|e| format!("{what} `{}`: {e}", dir.display()))?;
    let mut stack = vec![root];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            // What the broker's user cannot list, its children cannot
            // import from either.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => continue,
            Err(e) => return Err(format!("{what} `{}`: {e}", d.display())),
        };
        for entry in entries {
            let p = entry
                .map_err(|e| format!("{what} `{}`: {e}", d.display()))?
                .path();
            seen += 1;
            if seen > CODE_TREE_LIMIT {
                return Err(format!(
                    "{what} `{}`: more than {CODE_TREE_LIMIT} files under it to check; load code from a smaller directory",
                    dir.display()
                ));
            }
            let m =
                fs::symlink_metadata(&p).map_err(|e| format!("{what} `{}`: {e}", p.display()))?;
            if m.file_type().is_symlink() {
                check_trusted_as(&p, what, Trust::Program)?;
                continue;
            }
            // Sockets, pipes and devices hold no code to load.
            if !m.is_file() && !m.is_dir() {
                continue;
            }
            let mode = m.permissions().mode() & 0o7777;
            if m.uid() != me && m.uid() != 0 {
                return Err(format!(
                    "{what} `{}`: `{}` belongs to uid {}; code the broker's children load must belong to its own user (uid {me}) or root",
                    dir.display(),
                    p.display(),
                    m.uid()
                ));
            }
            if mode & 0o022 != 0 {
                return Err(format!(
                    "{what} `{}`: `{}` can be written by others (mode {mode:o}), who would then run code as the broker's user; `chmod go-w {}`",
                    dir.display(),
                    p.display(),
                    p.display()
                ));
            }
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link another user owns could be repointed between the check and
    /// the read: refused, wherever it is on the way; the broker's own link
    /// to the same file is fine.
    #[test]
    fn a_link_another_user_owns_is_not_followed() {
        if rustix::process::geteuid().as_raw() != 0 {
            // Giving a link to another user needs root, as CI runs.
            return;
        }
        let dir = std::env::temp_dir().join(format!(
            "warrant-trust-{}",
            crate::random::hex_id(8).unwrap()
        ));
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.join("warrant.toml");
        fs::write(&file, "").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let mine = dir.join("mine.toml");
        std::os::unix::fs::symlink(&file, &mine).unwrap();
        assert_eq!(
            check_trusted(&mine, "the configuration file", false),
            Ok(())
        );
        let theirs = dir.join("theirs.toml");
        std::os::unix::fs::symlink("mine.toml", &theirs).unwrap();
        std::os::unix::fs::lchown(&theirs, Some(65534), Some(65534)).unwrap();
        let e = check_trusted(&theirs, "the configuration file", false).unwrap_err();
        assert!(
            e.contains("symbolic link") && e.contains("uid 65534"),
            "{e}"
        );
        // Through a directory link too.
        let dlink = dir.join("d");
        std::os::unix::fs::symlink(&dir, &dlink).unwrap();
        std::os::unix::fs::lchown(&dlink, Some(65534), Some(65534)).unwrap();
        assert!(check_trusted(&dlink.join("warrant.toml"), "x", false).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
