//! Writing an output file safely: a temporary file in the target directory, renamed into place
//! only when everything succeeded. A failed run drops the temporary file, which deletes it.

use crate::error::{Error, Result};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Refuses an output that is the input (same path after resolving links, or the same inode)
/// and, unless `force`, an output that already exists.
pub(crate) fn check_output(input: &Path, output: &Path, force: bool) -> Result<()> {
    let same = || Err(Error::OutputIsInput { input: input.to_path_buf(), output: output.to_path_buf() });
    if input == output {
        return same();
    }
    let out_meta = match fs::metadata(output) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::Io { path: output.to_path_buf(), action: "inspect the output", source: e }),
    };
    if let (Ok(a), Ok(b)) = (fs::canonicalize(input), resolve(output)) {
        if a == b {
            return same();
        }
    }
    if let Some(out_meta) = out_meta {
        if let Ok(in_meta) = fs::metadata(input) {
            if same_file(&in_meta, &out_meta) {
                return same();
            }
        }
        if !force {
            return Err(Error::OutputExists { path: output.to_path_buf() });
        }
    }
    Ok(())
}

/// The canonical form of a path that may not exist yet: its canonical parent plus its name.
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    match fs::canonicalize(path) {
        Ok(p) => Ok(p),
        Err(_) => {
            let parent = parent_dir(path);
            let name = path.file_name().ok_or_else(|| std::io::Error::other("no file name"))?;
            Ok(fs::canonicalize(parent)?.join(name))
        }
    }
}

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &fs::Metadata, _: &fs::Metadata) -> bool {
    false
}

/// The directory a path lives in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A temporary file next to the final output; [`commit`](Self::commit) renames it into place.
/// Dropping it without committing deletes it.
pub(crate) struct AtomicFile {
    target: PathBuf,
    force: bool,
    writer: BufWriter<fs::File>,
    /// Deletes the temporary file when dropped (unless persisted).
    path: tempfile::TempPath,
}

impl AtomicFile {
    /// Creates the temporary file in `target`'s directory.
    pub(crate) fn create(target: &Path, force: bool) -> Result<Self> {
        let dir = parent_dir(target);
        let stem = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let prefix = format!(".{stem}.");
        let tmp = tempfile::Builder::new().prefix(&prefix).suffix(".tmp").tempfile_in(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            action: "create a temporary file in",
            source: e,
        })?;
        let (file, path) = tmp.into_parts();
        Ok(Self { target: target.to_path_buf(), force, writer: BufWriter::with_capacity(1 << 20, file), path })
    }

    /// The buffered writer on the temporary file.
    pub(crate) fn writer(&mut self) -> &mut BufWriter<fs::File> {
        &mut self.writer
    }

    /// The temporary file itself, after flushing the buffer: for writes that bypass it (such
    /// as `copy_file_range`). Writing through [`writer`](Self::writer) afterwards is fine.
    pub(crate) fn file(&mut self) -> Result<&mut fs::File> {
        self.writer.flush().map_err(|e| Error::Io { path: self.target.clone(), action: "write", source: e })?;
        Ok(self.writer.get_mut())
    }

    /// Flushes, gives the file `permissions`' mode (owner-writable), and renames it into place
    /// (without replacing an existing file unless `force`).
    pub(crate) fn commit(self, permissions: Option<fs::Permissions>) -> Result<()> {
        let target = self.target;
        let io = |action, source| Error::Io { path: target.clone(), action, source };
        let file = self.writer.into_inner().map_err(|e| io("write", e.into_error()))?;
        if let Some(perm) = permissions {
            set_permissions(&file, perm).map_err(|e| io("set permissions on", e))?;
        }
        drop(file);
        let result = if self.force { self.path.persist(&target) } else { self.path.persist_noclobber(&target) };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::OutputExists { path: target.clone() })
            }
            Err(e) => Err(io("rename the temporary file onto", e.error)),
        }
    }
}

#[cfg(unix)]
fn set_permissions(file: &fs::File, perm: fs::Permissions) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode((perm.mode() | 0o200) & 0o7777))
}

#[cfg(not(unix))]
fn set_permissions(_: &fs::File, _: fs::Permissions) -> std::io::Result<()> {
    Ok(())
}
