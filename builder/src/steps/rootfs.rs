//! The image's root folder for `RUN`: the layers so far unpacked into a working folder,
//! the command run there on the build host, and what it changed captured as a layer.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::archive::Guarded;
use crate::layer::{Entry, MEDIA_TYPE_GZIP, MEDIA_TYPE_ZSTD};

/// What identifies a file's state for change detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    kind: u32,
    mode: u32,
    size: u64,
    mtime_ns: i128,
    ino: u64,
    link: Option<PathBuf>,
}

pub type Snapshot = BTreeMap<String, Meta>;

/// Unpacks a layer blob (tar, tar+gzip or tar+zstd) into `dir`, applying OCI whiteouts.
pub fn unpack_layer(blob: &Path, media_type: &str, dir: &Path) -> io::Result<()> {
    let file = std::fs::File::open(blob)?;
    let reader: Box<dyn Read> = if media_type == MEDIA_TYPE_ZSTD || media_type.ends_with("+zstd") {
        Box::new(zstd::Decoder::new(file)?)
    } else if media_type == MEDIA_TYPE_GZIP
        || media_type.ends_with("gzip")
        || media_type.ends_with(".tar.gzip")
    {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    unpack_tar(reader, dir, u64::MAX)
}

/// Unpacks a tar stream of at most `max_bytes` into `dir`, refusing paths that leave it.
///
/// Whiteouts and the removal of a file that a folder replaces (or the reverse) act on
/// paths inside `dir` only: an entry whose folders go through a symlink (placed by an
/// earlier entry or layer) is refused before anything is removed, since the link may
/// point anywhere on the host (this runs as root on every cluster host). Each entry's
/// headers are bounded ([`Guarded`]), and sparse files are refused: a few bytes of
/// archive would become gigabytes in every layer and on every host.
pub fn unpack_tar(reader: impl Read, dir: &Path, max_bytes: u64) -> io::Result<()> {
    let (reader, guard) = Guarded::new(reader, max_bytes);
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    let mut entries = archive.entries()?;
    while let Some(entry) = guard.next(&mut entries) {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        if entry.header().entry_type().is_gnu_sparse() {
            return Err(refused(&path, "is a sparse file (not supported)"));
        }
        let parent = checked_parent(&path)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == ".wh..wh..opq" {
            beneath(dir, parent).map_err(|e| refused(&path, &e.to_string()))?;
            let d = dir.join(parent);
            if let Ok(children) = std::fs::read_dir(&d) {
                for c in children.flatten() {
                    remove_any(&c.path())?;
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                return Err(refused(&path, "is a whiteout of no file"));
            }
            beneath(dir, parent).map_err(|e| refused(&path, &e.to_string()))?;
            remove_any(&dir.join(parent).join(hidden))?;
            continue;
        }
        // A file replacing a folder (or the reverse) needs the old one gone first.
        let target = dir.join(&path);
        if let Ok(m) = std::fs::symlink_metadata(&target)
            && m.is_dir() != entry.header().entry_type().is_dir()
        {
            beneath(dir, parent).map_err(|e| refused(&path, &e.to_string()))?;
            remove_any(&target)?;
        }
        entry.unpack_in(dir).map_err(with_cause)?;
    }
    Ok(())
}

/// The `tar` crate wraps why an entry could not be unpacked (a limit, a full disk) in
/// "failed to unpack <path>": keep both.
fn with_cause(e: io::Error) -> io::Error {
    use std::error::Error;
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    io::Error::new(e.kind(), text)
}

fn refused(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("layer entry {} {why}", path.display()),
    )
}

/// The folder part of an entry's path, which must name folders inside the root (no
/// `..`, no absolute path); the last component must not be `..` either.
fn checked_parent(path: &Path) -> io::Result<&Path> {
    use std::path::Component;
    let inside = |c: Component| matches!(c, Component::Normal(_) | Component::CurDir);
    if !path.components().all(inside) {
        return Err(refused(path, "leaves the root folder"));
    }
    Ok(path.parent().unwrap_or(Path::new("")))
}

/// Refuses `rel` (a path inside `dir`) if any of its components that exist is a
/// symlink: what is written or removed there must be the file inside `dir`, never what
/// a link in the image points at (anywhere on the host). Used for layer whiteouts and for
/// the installer's Config documents.
pub fn beneath(dir: &Path, rel: &Path) -> io::Result<()> {
    let mut at = dir.to_path_buf();
    for c in rel.components() {
        let std::path::Component::Normal(part) = c else {
            continue;
        };
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} goes through a symlink ({})",
                        rel.display(),
                        at.display()
                    ),
                ));
            }
            Ok(_) => {}
            // Nothing further exists, so nothing there can be reached.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The state of every path under `dir`.
pub fn snapshot(dir: &Path) -> io::Result<Snapshot> {
    let mut out = Snapshot::new();
    walk(dir, "", &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Snapshot) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().into_string().map_err(|n| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{n:?} in the root folder is not UTF-8"),
            )
        })?;
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let m = std::fs::symlink_metadata(entry.path())?;
        let link = m
            .file_type()
            .is_symlink()
            .then(|| std::fs::read_link(entry.path()))
            .transpose()?;
        out.insert(
            rel.clone(),
            Meta {
                kind: m.mode() & libc_s_ifmt(),
                mode: m.mode(),
                size: if m.is_dir() { 0 } else { m.size() },
                mtime_ns: if m.is_dir() {
                    0
                } else {
                    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
                },
                ino: if m.is_dir() { 0 } else { m.ino() },
                link,
            },
        );
        if m.is_dir() {
            walk(&entry.path(), &rel, out)?;
        }
    }
    Ok(())
}

const fn libc_s_ifmt() -> u32 {
    0o170000
}

/// The entries of a layer holding what changed from `before` to `after` in `dir`:
/// new and changed paths, and a whiteout (an empty `.wh.NAME` file, made from `empty`)
/// for each removed path whose parent remains.
pub fn diff(before: &Snapshot, after: &Snapshot, dir: &Path, empty: &Path) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (path, meta) in after {
        if before.get(path) != Some(meta) {
            entries.push(Entry {
                source: dir.join(path),
                dest: path.clone(),
            });
        }
    }
    for path in before.keys() {
        if after.contains_key(path) {
            continue;
        }
        let (parent, name) = match path.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, path.as_str()),
        };
        if parent.is_some_and(|p| !after.contains_key(p)) {
            continue; // its folder went too: that folder's whiteout covers it
        }
        let dest = match parent {
            Some(p) => format!("{p}/.wh.{name}"),
            None => format!(".wh.{name}"),
        };
        entries.push(Entry {
            source: empty.to_path_buf(),
            dest,
        });
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{Compression, LayerOptions, write_layer};

    #[test]
    fn a_run_layer_holds_changes_and_whiteouts_that_unpack_to_the_same_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc/old")).unwrap();
        std::fs::write(root.join("etc/keep"), "k").unwrap();
        std::fs::write(root.join("etc/change"), "1").unwrap();
        std::fs::write(root.join("etc/old/x"), "x").unwrap();
        std::fs::write(root.join("gone"), "g").unwrap();
        // The same starting tree elsewhere, to apply the layer to.
        let copy = tmp.path().join("copy");
        std::fs::create_dir_all(copy.join("etc/old")).unwrap();
        std::fs::write(copy.join("etc/keep"), "k").unwrap();
        std::fs::write(copy.join("etc/change"), "1").unwrap();
        std::fs::write(copy.join("etc/old/x"), "x").unwrap();
        std::fs::write(copy.join("gone"), "g").unwrap();

        let before = snapshot(&root).unwrap();
        std::fs::write(root.join("etc/change"), "22").unwrap();
        std::fs::remove_dir_all(root.join("etc/old")).unwrap();
        std::fs::remove_file(root.join("gone")).unwrap();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/tool"), "t").unwrap();
        let after = snapshot(&root).unwrap();

        let empty = tmp.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        let entries = diff(&before, &after, &root, &empty);
        let mut dests: Vec<_> = entries.iter().map(|e| e.dest.as_str()).collect();
        dests.sort();
        assert_eq!(
            dests,
            [".wh.gone", "bin", "bin/tool", "etc/.wh.old", "etc/change"]
        );

        let layer = write_layer(
            &entries,
            LayerOptions {
                compression: Compression::Zstd,
                ..Default::default()
            },
            tmp.path(),
        )
        .unwrap();
        unpack_layer(&layer.path, layer.media_type, &copy).unwrap();
        let names = |d: &Path| snapshot(d).unwrap().into_keys().collect::<Vec<_>>();
        assert_eq!(names(&copy), names(&root));
        assert_eq!(
            std::fs::read_to_string(copy.join("etc/change")).unwrap(),
            "22"
        );
    }

    /// A tar of (path, kind) entries: `Some(target)` a symlink, `None` an empty file.
    fn tar_of(entries: &[(&str, Option<&Path>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(0);
            match link {
                Some(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    b.append_link(&mut h, path, target).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_cksum();
                    b.append_data(&mut h, path, io::empty()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_and_replacements_never_act_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::create_dir_all(victim.join("target/inner")).unwrap();
        std::fs::write(victim.join("file"), "keep").unwrap();
        for (entries, why) in [
            (
                vec![("l", Some(&*victim)), ("l/.wh.target", None)],
                "symlink",
            ),
            (
                vec![("l", Some(&*victim)), ("l/.wh..wh..opq", None)],
                "symlink",
            ),
            // A file where the victim has a folder: would remove the folder first.
            (vec![("l", Some(&*victim)), ("l/target", None)], "symlink"),
            (
                vec![("m", Some(Path::new("/"))), ("m/.wh..", None)],
                "whiteout",
            ),
            (
                vec![("m", Some(Path::new("/"))), ("m/.wh...", None)],
                "whiteout",
            ),
            (vec![(".wh..", None)], "whiteout"),
        ] {
            let root = tempfile::tempdir().unwrap();
            let err =
                unpack_tar(io::Cursor::new(tar_of(&entries)), root.path(), u64::MAX).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
            assert!(
                victim.join("target/inner").is_dir(),
                "{entries:?} removed it"
            );
            assert!(victim.join("file").is_file());
        }
        // Whiteouts inside the root, and ordinary entries through a link that stays in
        // it (merged /usr), keep working.
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.path().join("lib")).unwrap();
        let entries = [("etc", None), (".wh.etc", None), ("lib/foo", None)];
        unpack_tar(io::Cursor::new(tar_of(&entries)), root.path(), u64::MAX).unwrap();
        assert!(!root.path().join("etc").exists());
        assert!(root.path().join("usr/lib/foo").is_file());
    }
}
