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
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::seal::{AEAD_NAME, Kek, KekRing, SealContext, SealError, Sealed};

/// Length of a project master secret in bytes (256 bits; SPEC.md §4.2).
pub const PROJECT_SECRET_LEN: usize = 32;

/// Environment variable that supplies the KEK(s) instead of `DIR/kek`.
pub const KEK_ENV: &str = crate::seal::KEK_ENV;
const AAD_DOMAIN: &[u8] = b"renketsu/keystore/v1";
const KIND_PROJECT_MASTER: &str = "project-master";

/// Errors of the local key store. Messages name files and projects, never secret bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// Project names are 1–64 characters of `A-Z a-z 0-9 . _ -`, not starting with `.`
    /// ([`crate::names`]); the message shows only the first characters of the name.
    #[error("{0}")]
    InvalidProject(#[from] crate::names::NameError),
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

fn kek_error(e: SealError) -> KeyStoreError {
    match e {
        SealError::MalformedKek(what) => KeyStoreError::MalformedKek(what),
        // Only KEK parsing goes through here.
        SealError::MissingKek(_) | SealError::Open | SealError::Malformed => {
            KeyStoreError::MalformedKek("unreadable")
        }
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

/// `AAD = "renketsu/keystore/v1" || LP(kind) || LP(project) || LP(kek_id)`: the seal module's
/// layout with the parts (kind, project).
fn seal_parts<'a>(kind: &'a str, project: &'a str) -> [&'a [u8]; 2] {
    [kind.as_bytes(), project.as_bytes()]
}

/// A KEK id as written in sealed files: 16 hex digits (case-insensitive).
fn parse_kek_id(hex: &str) -> Option<[u8; 8]> {
    if hex.len() != 16 || !hex.is_ascii() {
        return None;
    }
    let mut id = [0u8; 8];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}

/// The one project-name rule ([`crate::names`]), shared with the custodian and the linkage unit.
fn valid_project(p: &str) -> bool {
    crate::names::is_valid_name(p)
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
    keks: KekRing,
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
        let keks = KekRing::parse(&text).map_err(kek_error)?;
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

    /// The KEK ring (to seal other secrets kept beside the store, e.g. a researcher's key).
    pub fn keks(&self) -> &KekRing {
        &self.keks
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn project_path(&self, project: &str) -> Result<PathBuf, KeyStoreError> {
        crate::names::check_project_name(project)?;
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
        let mut secret = Zeroizing::new([0u8; PROJECT_SECRET_LEN]);
        rng.fill_bytes(&mut secret[..]);
        let parts = seal_parts(KIND_PROJECT_MASTER, project);
        let ctx = SealContext {
            domain: AAD_DOMAIN,
            parts: &parts,
        };
        let sealed = self.keks.seal(rng, &ctx, &secret[..]);
        let file = SealedFile {
            format: 1,
            kind: KIND_PROJECT_MASTER.into(),
            project: project.into(),
            kek_id: sealed.kek_id_hex(),
            aead: AEAD_NAME.into(),
            nonce: B64.encode(sealed.nonce),
            ciphertext: B64.encode(&sealed.ciphertext),
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

    /// Unseals the master secret of `project`: 32 bytes (SPEC.md §4.2), zeroized on drop. The
    /// linkage core wraps them as its `ProjectSecret` at the call site; this crate does not
    /// depend on the core.
    ///
    /// # Errors
    /// [`KeyStoreError::UnknownProject`], [`KeyStoreError::MalformedSealed`],
    /// [`KeyStoreError::MissingKek`], [`KeyStoreError::Unseal`].
    pub fn project_secret(
        &self,
        project: &str,
    ) -> Result<Zeroizing<[u8; PROJECT_SECRET_LEN]>, KeyStoreError> {
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
        let ciphertext = B64.decode(&file.ciphertext).map_err(|_| malformed())?;
        let kek_id = parse_kek_id(&file.kek_id).ok_or_else(|| KeyStoreError::MissingKek {
            path: path.clone(),
            kek_id: file.kek_id.clone(),
        })?;
        let sealed = Sealed {
            kek_id,
            nonce,
            ciphertext,
        };
        // The AAD uses the project asked for, not the one written in the file: a sealed file
        // copied under another project's name fails here.
        let parts = seal_parts(KIND_PROJECT_MASTER, project);
        let ctx = SealContext {
            domain: AAD_DOMAIN,
            parts: &parts,
        };
        let raw: Zeroizing<[u8; PROJECT_SECRET_LEN]> =
            self.keks.open_array(&ctx, &sealed).map_err(|e| match e {
                SealError::MissingKek(kek_id) => KeyStoreError::MissingKek {
                    path: path.clone(),
                    kek_id,
                },
                SealError::Malformed => malformed(),
                SealError::Open | SealError::MalformedKek(_) => KeyStoreError::Unseal(path.clone()),
            })?;
        Ok(raw)
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
        assert_eq!(a[..], b[..]);
        assert_eq!(again.projects().unwrap(), vec!["p1".to_string()]);
        // The sealed file does not contain the secret in any obvious encoding.
        let sealed = fs::read_to_string(dir.path().join("projects/p1.json")).unwrap();
        assert!(!sealed.contains(&B64.encode(&a[..])));
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
        assert_eq!(store.project_secret("p").unwrap()[..], before[..]);
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
        let id = store.keks.primary_id_hex();
        let other = format!("renketsu-kek-v1:{id}:{}", B64.encode([9u8; 32]));
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
        assert_eq!(rotated.project_secret("p").unwrap()[..], secret[..]);
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
        // A long name is refused without being echoed whole.
        let long = "y".repeat(4096);
        let shown = store
            .create_project(&long, &mut rng())
            .unwrap_err()
            .to_string();
        assert!(shown.len() < 200 && shown.contains("4096 bytes"), "{shown}");
        assert!(matches!(
            store.project_secret("nope"),
            Err(KeyStoreError::UnknownProject { .. })
        ));
        assert!(LocalKeyStore::open(dir.path(), Some("garbage")).is_err());
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = LocalKeyStore::open_or_init(dir.path(), None, &mut rng()).unwrap();
        let line = fs::read_to_string(dir.path().join("kek")).unwrap();
        let key_b64 = line.trim().rsplit(':').next().unwrap();
        let shown = format!("{store:?}");
        assert!(
            !shown.contains(key_b64) && shown.contains("redacted"),
            "{shown}"
        );
    }

    /// The on-disk format is unchanged by the move to `seal`: a file sealed by hand exactly as
    /// the module docs describe (XChaCha20-Poly1305, AAD = domain || LP(kind) || LP(project)
    /// || LP(kek_id)) opens, and a file the store writes opens by hand.
    #[test]
    fn documented_file_format_round_trips_by_hand() {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        use chacha20poly1305::{XChaCha20Poly1305, XNonce};
        let dir = tempfile::tempdir().unwrap();
        let key = [0x42u8; 32];
        let id = "0011223344556677";
        let line = format!("renketsu-kek-v1:{id}:{}", B64.encode(key));
        let store = LocalKeyStore::open(dir.path(), Some(&line)).unwrap();
        let aad = |project: &str| {
            let mut a = b"renketsu/keystore/v1".to_vec();
            for part in ["project-master", project, id] {
                a.extend_from_slice(&(part.len() as u32).to_be_bytes());
                a.extend_from_slice(part.as_bytes());
            }
            a
        };
        let cipher = XChaCha20Poly1305::new(&key.into());
        let nonce = [3u8; 24];
        let secret = [9u8; 32];
        let ct = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &secret,
                    aad: &aad("hand"),
                },
            )
            .unwrap();
        let json = format!(
            r#"{{"format":1,"kind":"project-master","project":"hand","kek_id":"{id}","aead":"XChaCha20-Poly1305","nonce":"{}","ciphertext":"{}"}}"#,
            B64.encode(nonce),
            B64.encode(&ct)
        );
        create_private_dir(&dir.path().join("projects")).unwrap();
        fs::write(dir.path().join("projects/hand.json"), json).unwrap();
        assert_eq!(*store.project_secret("hand").unwrap(), secret);

        store.create_project("made", &mut rng()).unwrap();
        let file: SealedFile =
            serde_json::from_slice(&fs::read(dir.path().join("projects/made.json")).unwrap())
                .unwrap();
        assert_eq!(
            (file.kek_id.as_str(), file.aead.as_str()),
            (id, "XChaCha20-Poly1305")
        );
        let nonce: [u8; 24] = B64.decode(&file.nonce).unwrap().try_into().unwrap();
        let plain = cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &B64.decode(&file.ciphertext).unwrap(),
                    aad: &aad("made"),
                },
            )
            .unwrap();
        assert_eq!(plain, store.project_secret("made").unwrap()[..]);
    }
}
