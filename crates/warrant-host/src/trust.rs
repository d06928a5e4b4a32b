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
