//! Connection options shared by the commands that talk to a key custodian over mutual TLS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use renketsu_client::custodian::{ClientError, ConnectConfig, CustodianClient};

/// `--custodian URL --ca FILE --cert FILE --key FILE`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct CustodianArgs {
    /// The key custodian, e.g. https://localhost:7443.
    #[arg(long, env = "RENKETSU_CUSTODIAN", value_name = "URL")]
    pub custodian: Option<String>,
    /// CA certificate (PEM) that issued the custodian's certificate.
    #[arg(long, env = "RENKETSU_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Your client certificate (PEM); its role must allow the command.
    #[arg(long, env = "RENKETSU_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Your client private key (PEM).
    #[arg(long, env = "RENKETSU_CERT_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
}

impl CustodianArgs {
    /// Whether `--custodian` was given.
    pub fn is_remote(&self) -> bool {
        self.custodian.is_some()
    }

    /// The custodian client over mutual TLS (connected on first use), from
    /// `renketsu_client::custodian`.
    pub fn connect(&self) -> Result<CustodianClient> {
        let Some(url) = &self.custodian else {
            bail!("--custodian URL is required (or set RENKETSU_CUSTODIAN)");
        };
        let need = |p: &Option<PathBuf>, flag: &str| -> Result<PathBuf> {
            p.clone()
                .with_context(|| format!("--{flag} FILE is required to talk to the custodian"))
        };
        let mut config = ConnectConfig::new(
            url.clone(),
            &need(&self.ca, "ca")?,
            &need(&self.cert, "cert")?,
            &need(&self.key, "key")?,
        );
        config.timeout = Duration::from_secs(120);
        Ok(CustodianClient::connect(&config)?)
    }
}

/// A client error as a one-line error, with a hint for the statuses a user can fix.
pub(crate) fn client_error(e: ClientError) -> anyhow::Error {
    let hint = match e.code() {
        Some(tonic::Code::Unavailable) => {
            " (is the custodian running, and do --ca, --cert and --key belong to its PKI?)"
        }
        Some(tonic::Code::PermissionDenied) => " (check the role and party of --cert)",
        _ => "",
    };
    anyhow::anyhow!("{e}{hint}")
}
