//! Connection options shared by the commands that talk to a key custodian over mutual TLS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use renketsu_protocol::v1::key_custodian_client::KeyCustodianClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

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

    /// A gRPC client over mutual TLS (connected on first use).
    pub fn connect(&self) -> Result<KeyCustodianClient<Channel>> {
        let Some(url) = &self.custodian else {
            bail!("--custodian URL is required (or set RENKETSU_CUSTODIAN)");
        };
        let need = |p: &Option<PathBuf>, flag: &str| -> Result<Vec<u8>> {
            let Some(p) = p else {
                bail!("--{flag} FILE is required to talk to the custodian");
            };
            std::fs::read(p).with_context(|| format!("cannot read --{flag} {}", p.display()))
        };
        if !url.starts_with("https://") {
            bail!(
                "--custodian {url}: must start with https:// (the custodian only speaks mutual TLS)"
            );
        }
        let ca = need(&self.ca, "ca")?;
        let cert = need(&self.cert, "cert")?;
        let key = zeroize::Zeroizing::new(need(&self.key, "key")?);
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, &*key));
        let endpoint = Endpoint::from_shared(url.clone())
            .with_context(|| format!("--custodian {url}"))?
            .tls_config(tls)
            .with_context(|| format!("TLS settings for {url}"))?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .tcp_nodelay(true);
        Ok(KeyCustodianClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(64 * 1024 * 1024))
    }
}

/// A gRPC status as a one-line error: code and the custodian's message.
pub(crate) fn status_error(what: &str, s: &tonic::Status) -> anyhow::Error {
    let hint = match s.code() {
        tonic::Code::Unavailable => {
            " (is the custodian running, and do --ca, --cert and --key belong to its PKI?)"
        }
        tonic::Code::PermissionDenied => " (check the role and party of --cert)",
        _ => "",
    };
    anyhow::anyhow!("{what}: {:?}: {}{hint}", s.code(), s.message())
}
