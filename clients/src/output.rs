//! Output files written atomically: each file is written under a temporary name in the
//! output directory and renamed into place only when complete, so a crashed run never leaves
//! a truncated file that looks finished. `summary.json` is renamed last: its presence marks a
//! complete run.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A file being written; call [`PendingFile::commit`] to publish it. Dropped without a
/// commit (an error path), it removes its temporary file.
pub struct PendingFile {
    guard: TmpGuard,
    tmp: PathBuf,
    path: PathBuf,
    /// Buffered writer on the temporary file.
    pub writer: BufWriter<File>,
}

/// Removes a temporary file unless disarmed.
struct TmpGuard(Option<PathBuf>);

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

impl PendingFile {
    /// Starts writing `dir/name`.
    pub fn create(dir: &Path, name: &str) -> Result<Self> {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.partial"));
        let file =
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(Self {
            guard: TmpGuard(Some(tmp.clone())),
            tmp,
            path,
            writer: BufWriter::with_capacity(1 << 16, file),
        })
    }

    /// A CSV writer over this file.
    pub fn csv(self) -> CsvFile {
        CsvFile {
            guard: self.guard,
            path: self.path,
            tmp: self.tmp,
            writer: csv::Writer::from_writer(self.writer),
        }
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(self) -> Result<PathBuf> {
        let mut guard = self.guard;
        let file = self
            .writer
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", self.tmp.display()))?;
        finish(file, &self.tmp, &self.path)?;
        guard.0 = None;
        Ok(self.path)
    }
}

impl Write for PendingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

/// A CSV file being written.
pub struct CsvFile {
    guard: TmpGuard,
    tmp: PathBuf,
    path: PathBuf,
    /// The CSV writer.
    pub writer: csv::Writer<BufWriter<File>>,
}

impl CsvFile {
    /// Writes one record.
    pub fn row<I, T>(&mut self, fields: I) -> Result<()>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        self.writer
            .write_record(fields)
            .with_context(|| format!("cannot write {}", self.tmp.display()))
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(self) -> Result<PathBuf> {
        let writer = self
            .writer
            .into_inner()
            .map_err(|e| anyhow::anyhow!("{}", e.error()))
            .with_context(|| format!("cannot write {}", self.tmp.display()))?;
        PendingFile {
            guard: self.guard,
            tmp: self.tmp,
            path: self.path,
            writer,
        }
        .commit()
    }
}

fn finish(mut file: File, tmp: &Path, path: &Path) -> Result<()> {
    file.flush()?;
    file.sync_all()
        .with_context(|| format!("cannot sync {}", tmp.display()))?;
    fs::rename(tmp, path).with_context(|| format!("cannot rename {} into place", tmp.display()))
}
