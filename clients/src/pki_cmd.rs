//! `renketsu pki dev-init`: a development CA and role certificates (SPEC.md §8.2).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use renketsu_rpc::pki;

#[derive(Subcommand)]
pub(crate) enum PkiCommand {
    /// Make a development CA, the custodian's server certificate and one client certificate
    /// per role, so that a custodian and holders can run on one machine in minutes.
    #[command(long_about = "\
Make a development PKI in --out (created if missing; refuses to overwrite an existing CA):
  ca.pem, ca.key                 the development CA (trust ca.pem; keep ca.key offline)
  custodian.pem, custodian.key   server certificate for localhost, 127.0.0.1 and ::1
  admin.{pem,key}                role admin: create projects, enrol holders, rotate, revoke
  auditor.{pem,key}              role auditor: read and verify the audit log
  linkage-unit.{pem,key}         role linkage-unit: re-keying deltas
  <holder>.{pem,key}             role data-holder, one per --holder (default holder-a, holder-b)
Private keys are written with mode 0600. Each client certificate carries its party name as
the subject Common Name and its role as the URI urn:renketsu:role:<role>.
For production, issue certificates from your own CA following the same convention.
Example:
  renketsu pki dev-init --out pki --holder hospital-a --holder insurer-b")]
    DevInit {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// A data holder's party name (repeat for several; default: holder-a and holder-b).
        #[arg(long = "holder", value_name = "NAME")]
        holders: Vec<String>,
    },
}

pub(crate) fn run(command: PkiCommand) -> Result<()> {
    match command {
        PkiCommand::DevInit { out, holders } => dev_init(out, holders),
    }
}

fn dev_init(out: PathBuf, mut holders: Vec<String>) -> Result<()> {
    if holders.is_empty() {
        holders = vec!["holder-a".to_owned(), "holder-b".to_owned()];
    }
    let written = pki::dev_init(&out, &holders)
        .with_context(|| format!("renketsu pki dev-init --out {}", out.display()))?;
    let d = out.display();
    println!("wrote a development PKI to {d}:");
    println!("  {d}/ca.pem  (CA certificate)   {d}/ca.key  (CA key, 0600: keep it offline)");
    for w in &written {
        let role = w.role.map_or("server".to_owned(), |r| r.to_string());
        println!(
            "  {:<28} {:<13} {}",
            w.cert.display(),
            role,
            w.key.display()
        );
    }
    let h = &holders[0];
    println!(
        "
Next steps:
  1. Make a key-encryption key and a config file, then start the custodian:
       renketsu custodian init-config --pki {d} --out custodian.toml
       renketsu custodian serve --config custodian.toml
  2. As the admin, create a project and enrol the holders:
       renketsu keys create-project --project demo --recipe id4-kana-dob-sex/v1 \\
           --linkage-unit linkage-unit --custodian https://localhost:7443 \\
           --ca {d}/ca.pem --cert {d}/admin.pem --key {d}/admin.key
       renketsu keys enrol --project demo --party {h} --declared-records 100000 \\
           --custodian https://localhost:7443 --ca {d}/ca.pem --cert {d}/admin.pem --key {d}/admin.key
  3. As a holder, tokenize with the custodian using {d}/{h}.pem and {d}/{h}.key.
  4. As the auditor, check the audit log:
       renketsu audit verify --custodian https://localhost:7443 \\
           --ca {d}/ca.pem --cert {d}/auditor.pem --key {d}/auditor.key"
    );
    Ok(())
}
