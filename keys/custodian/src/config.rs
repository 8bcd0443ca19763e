//! The custodian's configuration file (TOML; SPEC.md §8.7).
//!
//! ```toml
//! listen = "127.0.0.1:7443"             # address to bind (host:port)
//! database = "sqlite://custodian.db"    # or postgres://user@host/db
//! kek_file = "kek"                      # KEK lines; RENKETSU_KEK overrides it
//! max_batch = 4096                      # most blinded elements per EvaluateBatch
//! quota_slack = 1.5                     # quota = ceil(declared_records × slack)
//!
//! [tls]
//! cert = "pki/custodian.pem"            # server certificate chain (PEM)
//! key = "pki/custodian.key"             # its private key (PEM)
//! client_ca = "pki/ca.pem"              # CA that issues client (role) certificates
//! ```
//!
//! Relative paths are resolved against the directory of the configuration file. Unknown keys
//! are errors, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default `max_batch`.
pub const DEFAULT_MAX_BATCH: usize = 4096;
/// Default `quota_slack`.
pub const DEFAULT_QUOTA_SLACK: f64 = 1.5;
/// Largest allowed `max_batch` (RFC 9497's batched proof encodes counts in 2 bytes).
pub const MAX_MAX_BATCH: usize = 65_536;

/// Errors loading a configuration file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read custodian config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape (unknown keys included).
    #[error("invalid custodian config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid custodian config {path}: {message}")]
    Value {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// TLS file paths.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA certificate(s) that client certificates must chain to (PEM).
    pub client_ca: PathBuf,
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustodianConfig {
    /// Socket address to listen on, e.g. `127.0.0.1:7443`.
    pub listen: SocketAddr,
    /// Database URL: `sqlite://PATH` (created if missing) or `postgres://…`.
    pub database: String,
    /// File with the key-encryption key line(s) (`renketsu-kek-v1:<id>:<base64>`); the
    /// environment variable `RENKETSU_KEK` takes precedence when set.
    #[serde(default)]
    pub kek_file: Option<PathBuf>,
    /// Most blinded elements per `EvaluateBatch` call (1..=65536).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Quota slack: a holder may evaluate `ceil(declared_records × quota_slack)` elements
    /// per (project, recipe, epoch); ≥ 1.0 leaves room for retries.
    #[serde(default = "default_quota_slack")]
    pub quota_slack: f64,
    /// TLS files.
    pub tls: TlsConfig,
}

fn default_max_batch() -> usize {
    DEFAULT_MAX_BATCH
}

fn default_quota_slack() -> f64 {
    DEFAULT_QUOTA_SLACK
}

fn resolve(base: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

impl CustodianConfig {
    /// Parses `text` (the contents of `path`), checks the values and resolves relative paths
    /// against `path`'s directory.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let value = |message: String| ConfigError::Value {
            path: path.to_owned(),
            message,
        };
        if config.max_batch == 0 || config.max_batch > MAX_MAX_BATCH {
            return Err(value(format!(
                "max_batch = {} is outside 1..={MAX_MAX_BATCH}",
                config.max_batch
            )));
        }
        if !(config.quota_slack.is_finite() && (1.0..=1000.0).contains(&config.quota_slack)) {
            return Err(value(format!(
                "quota_slack = {} must be between 1.0 and 1000.0",
                config.quota_slack
            )));
        }
        if !(config.database.starts_with("sqlite:")
            || config.database.starts_with("postgres://")
            || config.database.starts_with("postgresql://"))
        {
            return Err(value(format!(
                "database = {:?}: use sqlite://PATH or postgres://…",
                redact_url(&config.database)
            )));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        resolve(base, &mut config.tls.cert);
        resolve(base, &mut config.tls.key);
        resolve(base, &mut config.tls.client_ca);
        if let Some(k) = config.kek_file.as_mut() {
            resolve(base, k);
        }
        if let Some(rest) = config.database.strip_prefix("sqlite://") {
            let db = Path::new(rest);
            if !rest.is_empty() && !rest.starts_with(':') && db.is_relative() {
                config.database = format!("sqlite://{}", base.join(db).display());
            }
        }
        Ok(config)
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }
}

/// A database URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _password)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
listen = "127.0.0.1:7443"
database = "sqlite://custodian.db"
[tls]
cert = "pki/custodian.pem"
key = "/abs/custodian.key"
client_ca = "pki/ca.pem"
"#;

    #[test]
    fn defaults_and_relative_paths() {
        let c = CustodianConfig::parse(MINIMAL, Path::new("/etc/renketsu/custodian.toml")).unwrap();
        assert_eq!(c.listen, "127.0.0.1:7443".parse().unwrap());
        assert_eq!(c.max_batch, DEFAULT_MAX_BATCH);
        assert_eq!(c.quota_slack, DEFAULT_QUOTA_SLACK);
        assert_eq!(c.kek_file, None);
        assert_eq!(c.tls.cert, Path::new("/etc/renketsu/pki/custodian.pem"));
        assert_eq!(c.tls.key, Path::new("/abs/custodian.key"));
        assert_eq!(c.database, "sqlite:///etc/renketsu/custodian.db");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let typo = MINIMAL.replace("listen", "listne");
        let e = CustodianConfig::parse(&typo, Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("listne"), "{e}");
        let big = format!("max_batch = 0\n{MINIMAL}");
        let e = CustodianConfig::parse(&big, Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("max_batch = 0"), "{e}");
        let slack = format!("quota_slack = 0.5\n{MINIMAL}");
        assert!(CustodianConfig::parse(&slack, Path::new("c.toml")).is_err());
        let db = MINIMAL.replace("sqlite://custodian.db", "mysql://u:secret@h/db");
        let e = CustodianConfig::parse(&db, Path::new("c.toml")).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://renketsu:hunter2@db:5432/custodian"),
            "postgres://renketsu:***@db:5432/custodian"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
