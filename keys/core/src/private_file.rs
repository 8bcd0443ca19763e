//! Files only their owner may read: the custodian's and the linkage unit's SQLite stores are
//! created mode 0600 (SQLite gives its `-wal` and `-shm` files the database file's mode).

use std::path::Path;

/// Creates an empty file at `path`, mode 0600 on Unix, unless something exists there
/// already (an existing file is left as it is). Parent directories are not created.
///
/// # Errors
/// The I/O error of creating the file (not "already exists").
pub fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    #[test]
    fn a_new_file_is_0600_and_an_existing_one_is_kept() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db");
        super::create_private(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&p, b"kept").unwrap();
        super::create_private(&p).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"kept");
    }
}
