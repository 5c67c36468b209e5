//! Bundles split into numbered parts for media with a size limit: `NAME.000`, `NAME.001`,
//! … of at most the given size each, and `NAME.sha256` listing each part's SHA-256 in
//! `sha256sum` format (so `sha256sum -c NAME.sha256` checks them too).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use ring::digest::{Context, SHA256};
use sealer_registry::storage::fs::durable;

/// Writes a stream into parts; nothing has its final name until [`PartWriter::finish`].
pub struct PartWriter {
    dir: PathBuf,
    name: String,
    size: u64,
    current: Option<Current>,
    /// (partial path, final file name, sha256 hex)
    done: Vec<(PathBuf, String, String)>,
}

struct Current {
    file: io::BufWriter<std::fs::File>,
    partial: PathBuf,
    name: String,
    hash: Context,
    written: u64,
}

impl PartWriter {
    pub fn new(out: &Path, size: u64) -> io::Result<PartWriter> {
        if size == 0 {
            return Err(io::Error::other("the part size must be more than 0"));
        }
        let name = out
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::other("the output needs a file name"))?
            .to_string();
        Ok(PartWriter {
            dir: out.parent().unwrap_or(Path::new(".")).to_path_buf(),
            name,
            size,
            current: None,
            done: Vec::new(),
        })
    }

    fn close_current(&mut self) -> io::Result<()> {
        if let Some(c) = self.current.take() {
            let file = c.file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            let sha = hex::encode(c.hash.finish().as_ref());
            self.done.push((c.partial, c.name, sha));
        }
        Ok(())
    }

    fn open_next(&mut self) -> io::Result<()> {
        let name = format!("{}.{:03}", self.name, self.done.len());
        let partial = self.dir.join(format!(".{name}.partial"));
        self.current = Some(Current {
            file: io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&partial)?),
            partial,
            name,
            hash: Context::new(&SHA256),
            written: 0,
        });
        Ok(())
    }

    /// Gives every part its final name and writes the checksum file; returns the part
    /// file names.
    pub fn finish(mut self) -> io::Result<Vec<String>> {
        self.close_current()?;
        let mut sums = String::new();
        for (partial, name, sha) in &self.done {
            durable::publish(partial, &self.dir.join(name))?;
            sums.push_str(&format!("{sha}  {name}\n"));
        }
        let list = self.dir.join(format!("{}.sha256", self.name));
        durable::write_file(&list, sums.as_bytes(), 0o644)?;
        let done = std::mem::take(&mut self.done);
        Ok(done.into_iter().map(|(_, n, _)| n).collect())
    }
}

/// Dropped before [`PartWriter::finish`] (a failure): what was written goes.
impl Drop for PartWriter {
    fn drop(&mut self) {
        if let Some(c) = self.current.take() {
            let _ = std::fs::remove_file(c.partial);
        }
        for (partial, _, _) in &self.done {
            let _ = std::fs::remove_file(partial);
        }
    }
}

impl Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.current.as_ref().is_none_or(|c| c.written == self.size) {
            self.close_current()?;
            self.open_next()?;
        }
        let c = self.current.as_mut().expect("a part is open");
        let room = (self.size - c.written).min(data.len() as u64) as usize;
        let n = c.file.write(&data[..room])?;
        c.hash.update(&data[..n]);
        c.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.current {
            Some(c) => c.file.flush(),
            None => Ok(()),
        }
    }
}

/// Whether `path` names a part (`NAME.NNN`); returns NAME.
fn part_base(path: &Path) -> Option<(String, PathBuf)> {
    let name = path.file_name()?.to_str()?;
    let (base, n) = name.rsplit_once('.')?;
    (n.len() == 3 && n.bytes().all(|b| b.is_ascii_digit())).then(|| {
        (
            base.to_string(),
            path.parent().unwrap_or(Path::new("")).to_path_buf(),
        )
    })
}

/// The parts given (in any order), checked against their checksum file: every listed
/// part must be there and nothing else; they are read in order, and each is verified as
/// it is read. `None` when `inputs` is one ordinary file.
pub fn open_parts(inputs: &[PathBuf]) -> anyhow::Result<Option<PartsReader>> {
    let bases: Vec<_> = inputs.iter().map(|p| part_base(p)).collect();
    if bases.iter().all(Option::is_none) {
        if inputs.len() > 1 {
            bail!(
                "several inputs are given, but they are not parts of one bundle (NAME.000, NAME.001, …)"
            );
        }
        return Ok(None);
    }
    let Some(Some((base, dir))) = bases.first().cloned() else {
        bail!("{} is not a part (NAME.NNN)", inputs[0].display());
    };
    for (input, b) in inputs.iter().zip(&bases) {
        if b.as_ref().map(|(n, _)| n) != Some(&base) {
            bail!("{} is not a part of {base}", input.display());
        }
    }
    let list = dir.join(format!("{base}.sha256"));
    let text = std::fs::read_to_string(&list).with_context(|| {
        format!(
            "cannot read {}, which lists the parts and their checksums",
            list.display()
        )
    })?;
    let mut parts = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let (sha, name) = line
            .split_once("  ")
            .with_context(|| format!("{}:{}: expected `SHA256  NAME`", list.display(), i + 1))?;
        let path = inputs
            .iter()
            .find(|p| p.file_name().and_then(|n| n.to_str()) == Some(name.trim()))
            .with_context(|| {
                format!(
                    "part {} is missing (give every part listed in {})",
                    name.trim(),
                    list.display()
                )
            })?;
        parts.push((path.clone(), sha.trim().to_string()));
    }
    if parts.len() != inputs.len() {
        bail!(
            "{} lists {} part(s) but {} were given",
            list.display(),
            parts.len(),
            inputs.len()
        );
    }
    Ok(Some(PartsReader {
        parts,
        next: 0,
        current: None,
    }))
}

/// Reads parts one after the other, checking each one's SHA-256 when it ends.
pub struct PartsReader {
    parts: Vec<(PathBuf, String)>,
    next: usize,
    current: Option<(std::fs::File, Context, usize)>,
}

impl PartsReader {
    /// The total size of the parts.
    pub fn len(&self) -> io::Result<u64> {
        let mut total = 0;
        for (p, _) in &self.parts {
            total += std::fs::metadata(p)?.len();
        }
        Ok(total)
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

impl Read for PartsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                if self.next == self.parts.len() {
                    return Ok(0);
                }
                let file = std::fs::File::open(&self.parts[self.next].0)?;
                self.current = Some((file, Context::new(&SHA256), self.next));
                self.next += 1;
            }
            let (file, hash, i) = self.current.as_mut().expect("a part is open");
            let n = file.read(buf)?;
            if n > 0 {
                hash.update(&buf[..n]);
                return Ok(n);
            }
            let (_, hash, i) = (file, hash.clone(), *i);
            self.current = None;
            let (path, expected) = &self.parts[i];
            if hex::encode(hash.finish().as_ref()) != *expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "part {} is damaged: its SHA-256 does not match",
                        path.display()
                    ),
                ));
            }
        }
    }
}

/// Parses a size such as `4G`, `700M`, `4096` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: use e.g. 4G, 700M"))?;
    let mult: u64 = match unit
        .trim_end_matches(['i', 'B', 'b'])
        .to_ascii_uppercase()
        .as_str()
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("invalid size {s:?}: use e.g. 4G, 700M")),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("invalid size {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_in_any_order_and_name_what_is_missing_or_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("b.tar");
        let data: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut w = PartWriter::new(&out, 16_384).unwrap();
        w.write_all(&data).unwrap();
        let names = w.finish().unwrap();
        assert_eq!(names, ["b.tar.000", "b.tar.001", "b.tar.002"]);
        let path = |n: &str| dir.path().join(n);
        let mut given = vec![path("b.tar.002"), path("b.tar.000"), path("b.tar.001")];
        let mut back = Vec::new();
        open_parts(&given)
            .unwrap()
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);

        given.pop();
        let err = open_parts(&given).err().unwrap().to_string();
        assert!(err.contains("part b.tar.001 is missing"), "{err}");

        let mut bytes = std::fs::read(path("b.tar.001")).unwrap();
        bytes[7] ^= 1;
        std::fs::write(path("b.tar.001"), bytes).unwrap();
        given.push(path("b.tar.001"));
        let err = open_parts(&given)
            .unwrap()
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("b.tar.001 is damaged"), "{err}");

        assert!(open_parts(&[path("b.tar")]).unwrap().is_none());
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("700MiB").unwrap(), 700 << 20);
        assert!(parse_size("0").is_err() && parse_size("4Q").is_err());
    }
}
