//! Whole-or-nothing file writes: a temporary file beside the target, renamed into place.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

pub use tempfile::{NamedTempFile, TempDir};

/// A fresh temporary file in `path`'s folder (created if missing), named
/// `.{file name}.XXXXXX.partial`, with the permissions an ordinary new file gets. It is removed
/// when dropped unless [`NamedTempFile::persist`]ed onto `path`.
pub fn temp_file_beside(path: &Path) -> std::io::Result<NamedTempFile> {
    // 0o666 less the umask, as `File::create` gives; tempfile's default is 0o600.
    beside(path, 0o666, |b, dir| b.tempfile_in(dir))
}

/// A fresh temporary folder beside `path` (its parent created if missing), named
/// `.{file name}.XXXXXX.partial`, with the permissions an ordinary new folder gets. It is removed
/// with its contents when dropped unless [`persist_dir`]ed onto `path`.
pub fn temp_dir_beside(path: &Path) -> std::io::Result<TempDir> {
    // 0o777 less the umask, as `create_dir` gives; tempfile's default is 0o700.
    beside(path, 0o777, |b, dir| b.tempdir_in(dir))
}

/// `make` with a builder for `.{file name}.{pid}.XXXXXX.partial` in `path`'s folder (created if
/// missing), asking for `mode` (less the umask) on Unix. Partial files of the same target left
/// by a process that no longer runs (killed with SIGKILL, or the machine went down) are removed
/// first.
fn beside<T>(
    path: &Path,
    #[cfg_attr(not(unix), allow(unused_variables))] mode: u32,
    make: impl FnOnce(&tempfile::Builder, &Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let (dir, name) = parent_and_name(path);
    std::fs::create_dir_all(dir)?;
    remove_orphaned_partials(dir, &name);
    let prefix = format!(".{name}.{}.", std::process::id());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".partial");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    make(&builder, dir)
}

/// Remove `.{name}.{pid}.XXXXXX.partial` files and folders in `dir` whose process is gone
/// (Linux: no `/proc/{pid}`; elsewhere nothing is removed). Best effort: a failure leaves them.
fn remove_orphaned_partials(dir: &Path, name: &str) {
    let proc = Path::new("/proc/self");
    if !proc.exists() {
        return;
    }
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = file
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".partial"))
        else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Move a finished temporary folder onto `path`, replacing a folder that was there.
pub fn persist_dir(tmp: TempDir, path: &Path) -> std::io::Result<()> {
    if path.exists() {
        std::fs::remove_dir_all(path)?;
    }
    std::fs::rename(tmp.path(), path)?;
    let _moved = tmp.keep();
    Ok(())
}

fn parent_and_name(path: &Path) -> (&Path, std::borrow::Cow<'_, str>) {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    (dir, path.file_name().unwrap_or_default().to_string_lossy())
}

/// Move a finished temporary file onto `path`, replacing what was there.
pub fn persist(tmp: NamedTempFile, path: &Path) -> std::io::Result<()> {
    tmp.persist(path).map(drop).map_err(|e| e.error)
}

/// Write `path` whole or not at all: `write` fills a buffered temporary file beside it, which
/// then replaces `path`. On any error the temporary file is removed and `path` is untouched.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&mut File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut tmp = temp_file_beside(path)?;
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        write(&mut w)?;
        w.flush()?;
    }
    persist(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_file_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.txt");
        write_atomically(&path, |w| w.write_all(b"first")).unwrap();
        write_atomically(&path, |w| w.write_all(b"second")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        std::fs::write(&path, b"old").unwrap();
        let err = write_atomically(&path, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn the_file_gets_ordinary_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (ours, plain) = (dir.path().join("a"), dir.path().join("b"));
        write_atomically(&ours, |w| w.write_all(b"x")).unwrap();
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode(&ours), mode(&plain));
    }
}

/// Refuse a FIFO, socket or device where a file (or folder) is expected: reading one would
/// block forever (a FIFO no one writes) or never end (`/dev/zero`). Paths that do not exist
/// pass (the caller's own open says so).
pub fn refuse_special_file(path: &Path) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() && !m.is_dir() => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, socket or device)",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod special_file_tests {
    use super::*;

    #[test]
    fn devices_are_refused_and_files_folders_and_missing_paths_pass() {
        let e = refuse_special_file(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.png");
        std::fs::write(&file, b"x").unwrap();
        for ok in [dir.path(), file.as_path(), Path::new("/no/such/file")] {
            assert!(refuse_special_file(ok).is_ok(), "{}", ok.display());
        }
    }
}

/// Why `path` cannot be reached, in words for a message after the path: "no such file or
/// folder", "a symbolic link that loops" (ELOOP: a bare "not found" would mislead),
/// "a symbolic link to nothing", or the system's reason (permission denied, ...).
pub fn why_unreachable(path: &Path) -> String {
    let Err(e) = std::fs::metadata(path) else {
        return "exists".into();
    };
    let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    const ELOOP: i32 = 40;
    match (link, e.kind()) {
        (true, _) if e.raw_os_error() == Some(ELOOP) => {
            "a symbolic link that loops (too many levels of symbolic links)".into()
        }
        (true, std::io::ErrorKind::NotFound) => "a symbolic link to nothing".into(),
        (_, std::io::ErrorKind::NotFound) => "no such file or folder".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod unreachable_tests {
    use super::*;

    #[test]
    fn loops_dangling_links_and_missing_paths_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        assert!(
            why_unreachable(&a).contains("loops"),
            "{}",
            why_unreachable(&a)
        );
        let dangling = dir.path().join("d");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
        assert_eq!(why_unreachable(&dangling), "a symbolic link to nothing");
        assert_eq!(
            why_unreachable(&dir.path().join("x")),
            "no such file or folder"
        );
    }
}

#[cfg(test)]
mod orphan_tests {
    use super::*;

    #[test]
    fn partials_of_a_gone_process_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("pca.tif");
        // pid 4194304 is above Linux's pid_max: never a live process.
        let dead = dir.path().join(".pca.tif.4194304.ab12cd.partial");
        let live = dir
            .path()
            .join(format!(".pca.tif.{}.ef34gh.partial", std::process::id()));
        let other = dir.path().join(".other.tif.4194304.ab12cd.partial");
        for p in [&dead, &live, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        write_atomically(&target, |w| w.write_all(b"done")).unwrap();
        assert!(!dead.exists() || !Path::new("/proc/self").exists());
        assert!(live.exists() && other.exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"done");
    }
}
