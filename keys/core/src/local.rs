//! The local, file-based key store (SPEC.md §6).
//!
//! Layout of a store directory (all files mode 0600, the directories 0700):
//! ```text
//! DIR/kek                      KEK line(s), unless RENKETSU_KEK supplies them
//! DIR/projects/<project>.json  one sealed project master secret
//! ```
//! A KEK line is `renketsu-kek-v1:<16 hex id>:<base64 32-byte key>`; several lines (or
//! comma-separated values in `RENKETSU_KEK`) allow rotation: the first seals, any unseals.
//! A sealed file is JSON `{format, kind, project, kek_id, aead, nonce, ciphertext}` with
//! `AAD = "renketsu/keystore/v1" || LP(kind) || LP(project) || LP(kek_id)`.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use renketsu_linkage::secret::{PROJECT_SECRET_LEN, ProjectSecret};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// Environment variable that supplies the KEK(s) instead of `DIR/kek`.
pub const KEK_ENV: &str = "RENKETSU_KEK";
const KEK_PREFIX: &str = "renketsu-kek-v1";
const AAD_DOMAIN: &[u8] = b"renketsu/keystore/v1";
const KIND_PROJECT_MASTER: &str = "project-master";
const AEAD_NAME: &str = "XChaCha20-Poly1305";

/// Errors of the local key store. Messages name files and projects, never secret bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// Reading or writing a store file failed.
    #[error("key store I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The directory holds no KEK and none was given in `RENKETSU_KEK`.
    #[error(
        "no key-encryption key: {0} does not exist and RENKETSU_KEK is not set (run `renketsu keys init`)"
    )]
    NoKek(PathBuf),
    /// A KEK line is not `renketsu-kek-v1:<hex id>:<base64 key>`.
    #[error(
        "malformed key-encryption key ({0}): expected renketsu-kek-v1:<16 hex id>:<base64 32-byte key>"
    )]
    MalformedKek(&'static str),
    /// Project names are 1–64 characters of `A-Z a-z 0-9 . _ -`, not starting with `.`.
    #[error(
        "invalid project name {0:?}: use 1-64 characters of A-Z a-z 0-9 . _ - (not starting with .)"
    )]
    InvalidProject(String),
    /// `create_project` on a project that already has a secret.
    #[error("project {0:?} already has a master secret in this store; refusing to overwrite it")]
    ProjectExists(String),
    /// No sealed secret for that project.
    #[error(
        "no master secret for project {project:?} in {dir} (run `renketsu keys init --project {project}`)"
    )]
    UnknownProject {
        /// The project asked for.
        project: String,
        /// The store directory.
        dir: PathBuf,
    },
    /// The sealed file is not valid JSON of the expected shape or version.
    #[error("sealed file {0} is malformed")]
    MalformedSealed(PathBuf),
    /// The sealed file names a KEK id that none of the configured KEKs has.
    #[error("sealed file {path} was sealed with KEK {kek_id}, which is not configured")]
    MissingKek {
        /// The sealed file.
        path: PathBuf,
        /// Its KEK id (public).
        kek_id: String,
    },
    /// Authentication failed: wrong KEK, or the file was altered, renamed or moved.
    #[error(
        "sealed file {0} failed authentication (altered, moved to another project, or wrong KEK)"
    )]
    Unseal(PathBuf),
}

/// A key-encryption key: 8-byte public id and 32 secret bytes (zeroized on drop).
struct Kek {
    id: String,
    key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek {{ id: {}, key: <redacted> }}", self.id)
    }
}

impl Kek {
    fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut id = [0u8; 8];
        rng.fill_bytes(&mut id);
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut());
        Self {
            id: id.iter().map(|b| format!("{b:02x}")).collect(),
            key,
        }
    }

    fn parse(line: &str) -> Result<Self, KeyStoreError> {
        let mut parts = line.trim().splitn(3, ':');
        let (Some(KEK_PREFIX), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyStoreError::MalformedKek("prefix"));
        };
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KeyStoreError::MalformedKek("id"));
        }
        let bytes = Zeroizing::new(
            B64.decode(b64)
                .map_err(|_| KeyStoreError::MalformedKek("base64"))?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return Err(KeyStoreError::MalformedKek("length"));
        }
        key.copy_from_slice(&bytes);
        Ok(Self {
            id: id.to_ascii_lowercase(),
            key,
        })
    }

    fn line(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{KEK_PREFIX}:{}:{}",
            self.id,
            B64.encode(self.key.as_ref())
        ))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(*self.key))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedFile {
    format: u32,
    kind: String,
    project: String,
    kek_id: String,
    aead: String,
    nonce: String,
    ciphertext: String,
}

fn aad(kind: &str, project: &str, kek_id: &str) -> Vec<u8> {
    let mut out = AAD_DOMAIN.to_vec();
    for part in [kind, project, kek_id] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

fn valid_project(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 64
        && !p.starts_with('.')
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyStoreError + '_ {
    move |source| KeyStoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` with mode 0600, atomically, refusing to replace an existing file.
fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), KeyStoreError> {
    let dir = path.parent().expect("store files live in a directory");
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let _ = fs::remove_file(&tmp);
    let mut f = opts.open(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    // A hard link fails if `path` exists: no overwrite, and no half-written file is visible.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked.map_err(io(path))
}

fn create_private_dir(path: &Path) -> Result<(), KeyStoreError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(path).map_err(io(path))
}

/// A directory of sealed project master secrets plus the KEK(s) that unseal them.
pub struct LocalKeyStore {
    dir: PathBuf,
    keks: Vec<Kek>,
}

impl fmt::Debug for LocalKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeyStore")
            .field("dir", &self.dir)
            .field("keks", &self.keks)
            .finish()
    }
}

impl LocalKeyStore {
    /// Opens the store in `dir`. KEKs come from `kek_env` (the value of `RENKETSU_KEK`, if
    /// set: comma-separated KEK lines) or else from `DIR/kek`.
    ///
    /// # Errors
    /// [`KeyStoreError::NoKek`] if neither exists; [`KeyStoreError::MalformedKek`].
    pub fn open(dir: impl Into<PathBuf>, kek_env: Option<&str>) -> Result<Self, KeyStoreError> {
        let dir = dir.into();
        let text = match kek_env {
            Some(v) => Zeroizing::new(v.replace(',', "\n")),
            None => {
                let path = dir.join("kek");
                if !path.exists() {
                    return Err(KeyStoreError::NoKek(path));
                }
                Zeroizing::new(fs::read_to_string(&path).map_err(io(&path))?)
            }
        };
        let keks = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(Kek::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if keks.is_empty() {
            return Err(KeyStoreError::MalformedKek("empty"));
        }
        Ok(Self { dir, keks })
    }

    /// Opens the store, creating the directory and a fresh `DIR/kek` (mode 0600) first when
    /// there is no KEK at all. Returns the store and whether a KEK was created.
    ///
    /// # Errors
    /// As [`LocalKeyStore::open`], plus I/O errors.
    pub fn open_or_init<R: rand::CryptoRng + ?Sized>(
        dir: impl Into<PathBuf>,
        kek_env: Option<&str>,
        rng: &mut R,
    ) -> Result<(Self, bool), KeyStoreError> {
        let dir = dir.into();
        create_private_dir(&dir.join("projects"))?;
        let kek_path = dir.join("kek");
        let mut created = false;
        if kek_env.is_none() && !kek_path.exists() {
            let kek = Kek::generate(rng);
            let mut line = kek.line();
            line.push('\n');
            write_new_private(&kek_path, line.as_bytes())?;
            created = true;
        }
        Ok((Self::open(dir, kek_env)?, created))
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn project_path(&self, project: &str) -> Result<PathBuf, KeyStoreError> {
        if !valid_project(project) {
            return Err(KeyStoreError::InvalidProject(project.to_owned()));
        }
        Ok(self.dir.join("projects").join(format!("{project}.json")))
    }

    /// Generates and seals a new master secret for `project` (first KEK seals).
    ///
    /// # Errors
    /// [`KeyStoreError::ProjectExists`] rather than ever replacing a secret (tokens made with
    /// it would silently stop matching); I/O errors.
    pub fn create_project<R: rand::CryptoRng + ?Sized>(
        &self,
        project: &str,
        rng: &mut R,
    ) -> Result<(), KeyStoreError> {
        let path = self.project_path(project)?;
        if path.exists() {
            return Err(KeyStoreError::ProjectExists(project.to_owned()));
        }
        create_private_dir(path.parent().expect("has parent"))?;
        let secret = ProjectSecret::generate(rng);
        let kek = &self.keks[0];
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        let aad = aad(KIND_PROJECT_MASTER, project, &kek.id);
        let ct = kek
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret.expose(),
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts 32 bytes");
        let file = SealedFile {
            format: 1,
            kind: KIND_PROJECT_MASTER.into(),
            project: project.into(),
            kek_id: kek.id.clone(),
            aead: AEAD_NAME.into(),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ct),
        };
        let json = serde_json::to_vec_pretty(&file).expect("serializable");
        match write_new_private(&path, &json) {
            Err(KeyStoreError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                Err(KeyStoreError::ProjectExists(project.to_owned()))
            }
            other => other,
        }
    }

    /// Unseals the master secret of `project`.
    ///
    /// # Errors
    /// [`KeyStoreError::UnknownProject`], [`KeyStoreError::MalformedSealed`],
    /// [`KeyStoreError::MissingKek`], [`KeyStoreError::Unseal`].
    pub fn project_secret(&self, project: &str) -> Result<ProjectSecret, KeyStoreError> {
        let path = self.project_path(project)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyStoreError::UnknownProject {
                    project: project.to_owned(),
                    dir: self.dir.clone(),
                });
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let malformed = || KeyStoreError::MalformedSealed(path.clone());
        let file: SealedFile = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
        if file.format != 1 || file.aead != AEAD_NAME || file.kind != KIND_PROJECT_MASTER {
            return Err(malformed());
        }
        let nonce: [u8; 24] = B64
            .decode(&file.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(malformed)?;
        let ct = B64.decode(&file.ciphertext).map_err(|_| malformed())?;
        let kek = self
            .keks
            .iter()
            .find(|k| k.id == file.kek_id)
            .ok_or_else(|| KeyStoreError::MissingKek {
                path: path.clone(),
                kek_id: file.kek_id.clone(),
            })?;
        // The AAD uses the project asked for, not the one written in the file: a sealed file
        // copied under another project's name fails here.
        let aad = aad(KIND_PROJECT_MASTER, project, &kek.id);
        let mut plain = Zeroizing::new(
            kek.cipher()
                .decrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: &ct,
                        aad: &aad,
                    },
                )
                .map_err(|_| KeyStoreError::Unseal(path.clone()))?,
        );
        let mut raw = [0u8; PROJECT_SECRET_LEN];
        if plain.len() != PROJECT_SECRET_LEN {
            return Err(malformed());
        }
        raw.copy_from_slice(&plain);
        plain.zeroize();
        let secret = ProjectSecret::from_bytes(raw);
        raw.zeroize();
        Ok(secret)
    }

    /// Names of the projects that have a sealed secret, sorted.
    ///
    /// # Errors
    /// I/O errors reading the directory.
    pub fn projects(&self) -> Result<Vec<String>, KeyStoreError> {
        let dir = self.dir.join("projects");
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(&dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(p) = name.strip_suffix(".json")
                && valid_project(p)
            {
                out.push(p.to_owned());
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> rand::rngs::StdRng {
        rand::SeedableRng::seed_from_u64(7)
    }

    #[test]
    fn create_then_unseal_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let (store, created) = LocalKeyStore::open_or_init(dir.path(), None, &mut rng()).unwrap();
        assert!(created);
        store.create_project("p1", &mut rng()).unwrap();
        let a = store.project_secret("p1").unwrap();
        let again = LocalKeyStore::open(dir.path(), None).unwrap();
        let b = again.project_secret("p1").unwrap();
        assert_eq!(a.expose(), b.expose());
        assert_eq!(again.projects().unwrap(), vec!["p1".to_string()]);
        // The sealed file does not contain the secret in any obvious encoding.
        let sealed = fs::read_to_string(dir.path().join("projects/p1.json")).unwrap();
        assert!(!sealed.contains(&B64.encode(a.expose())));
    }

    #[cfg(unix)]
    #[test]
    fn files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = LocalKeyStore::open_or_init(dir.path(), None, &mut rng()).unwrap();
        store.create_project("p", &mut rng()).unwrap();
        for f in ["kek", "projects/p.json"] {
            let mode = fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }

    #[test]
    fn never_overwrites_a_project() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = LocalKeyStore::open_or_init(dir.path(), None, &mut rng()).unwrap();
        store.create_project("p", &mut rng()).unwrap();
        let before = store.project_secret("p").unwrap();
        assert!(matches!(
            store.create_project("p", &mut rng()),
            Err(KeyStoreError::ProjectExists(_))
        ));
        assert_eq!(store.project_secret("p").unwrap().expose(), before.expose());
    }

    #[test]
    fn tampering_renaming_and_wrong_kek_fail() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = LocalKeyStore::open_or_init(dir.path(), None, &mut rng()).unwrap();
        store.create_project("a", &mut rng()).unwrap();
        let pa = dir.path().join("projects/a.json");
        // Copy a's sealed file to project b: AAD binds the project name.
        fs::copy(&pa, dir.path().join("projects/b.json")).unwrap();
        assert!(matches!(
            store.project_secret("b"),
            Err(KeyStoreError::Unseal(_))
        ));
        // Flip one ciphertext bit.
        let mut file: SealedFile = serde_json::from_slice(&fs::read(&pa).unwrap()).unwrap();
        let mut ct = B64.decode(&file.ciphertext).unwrap();
        ct[0] ^= 1;
        file.ciphertext = B64.encode(ct);
        fs::write(&pa, serde_json::to_vec(&file).unwrap()).unwrap();
        assert!(matches!(
            store.project_secret("a"),
            Err(KeyStoreError::Unseal(_))
        ));
        // Another KEK with the same id cannot unseal.
        store.create_project("c", &mut rng()).unwrap();
        let id = &store.keks[0].id;
        let other = format!("{KEK_PREFIX}:{id}:{}", B64.encode([9u8; 32]));
        let wrong = LocalKeyStore::open(dir.path(), Some(&other)).unwrap();
        assert!(matches!(
            wrong.project_secret("c"),
            Err(KeyStoreError::Unseal(_))
        ));
    }

    #[test]
    fn rotation_first_kek_seals_any_unseals() {
        let dir = tempfile::tempdir().unwrap();
        let old = Kek::generate(&mut rng());
        let new = Kek::generate(&mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(8));
        let env_old = old.line().to_string();
        let (store, created) =
            LocalKeyStore::open_or_init(dir.path(), Some(&env_old), &mut rng()).unwrap();
        assert!(!created, "no kek file when RENKETSU_KEK is set");
        store.create_project("p", &mut rng()).unwrap();
        let secret = store.project_secret("p").unwrap();
        let both = format!("{},{}", new.line().as_str(), old.line().as_str());
        let rotated = LocalKeyStore::open(dir.path(), Some(&both)).unwrap();
        assert_eq!(
            rotated.project_secret("p").unwrap().expose(),
            secret.expose()
        );
        rotated.create_project("q", &mut rng()).unwrap();
        let only_new = LocalKeyStore::open(dir.path(), Some(new.line().as_str())).unwrap();
        assert!(only_new.project_secret("q").is_ok());
        assert!(matches!(
            only_new.project_secret("p"),
            Err(KeyStoreError::MissingKek { .. })
        ));
    }

    #[test]
    fn bad_names_and_missing_kek() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            LocalKeyStore::open(dir.path(), None),
            Err(KeyStoreError::NoKek(_))
        ));
        let (store, _) = LocalKeyStore::open_or_init(dir.path(), None, &mut rng()).unwrap();
        for bad in ["", "../x", ".hidden", "a/b", &"x".repeat(65)] {
            assert!(
                matches!(
                    store.create_project(bad, &mut rng()),
                    Err(KeyStoreError::InvalidProject(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            store.project_secret("nope"),
            Err(KeyStoreError::UnknownProject { .. })
        ));
        assert!(LocalKeyStore::open(dir.path(), Some("garbage")).is_err());
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = Kek::generate(&mut rng());
        let shown = format!("{k:?}");
        assert!(!shown.contains(&B64.encode(k.key.as_ref())) && shown.contains("redacted"));
    }
}
