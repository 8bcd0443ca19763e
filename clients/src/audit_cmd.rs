//! `renketsu audit verify`: read the custodian's audit log and check its hash chain against the
//! sealed head (SPEC.md §8.8).

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use renketsu_client::audit as from_wire;
use renketsu_keys::audit;
use renketsu_protocol::v1;

use crate::custodian_conn::{CustodianArgs, client_error};

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Verify the custodian's audit log: every entry's hash, the chain between entries, and the
    /// end of the log against the sealed head. Exits non-zero naming the first bad entry.
    #[command(long_about = "\
Verify the custodian's audit log (needs an auditor certificate):
  1. GetAuditHead: the sequence and hash of the last entry, sealed by the custodian;
  2. ReadAuditLog: every entry up to that head;
  3. check each entry's hash over its fields, each prev_hash link, no gaps, no reordering, and
     that the log ends exactly at the sealed head (so deleting the last rows is detected).
Example:
  renketsu audit verify --custodian https://localhost:7443 \\
      --ca pki/ca.pem --cert pki/auditor.pem --key pki/auditor.key")]
    Verify {
        #[command(flatten)]
        conn: CustodianArgs,
        /// Also print every entry (sequence, time, party, role, RPC, project, recipe, epoch,
        /// items, status).
        #[arg(long)]
        show: bool,
    },
}

pub(crate) fn run(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify { conn, show } => verify(&conn, show),
    }
}

fn verify(conn: &CustodianArgs, show: bool) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let client = conn.connect()?;
        let head = client.audit_head().await.map_err(client_error)?;
        let head = from_wire::head_from_wire(&head)?;
        let mut wire = Vec::new();
        if let Some(h) = &head {
            // Read up to the head only: calls made after it (this one included) are not part
            // of what the head seals. An entry deleted from the middle then shows as a gap,
            // rows deleted from the end as a log shorter than the head.
            let limit = u32::try_from(h.sequence).unwrap_or(u32::MAX);
            client
                .read_audit_log(1, limit, |e| {
                    if e.sequence > h.sequence {
                        return false;
                    }
                    wire.push(e);
                    true
                })
                .await
                .map_err(client_error)?;
        }
        let mut entries = Vec::with_capacity(wire.len());
        for e in &wire {
            if show {
                println!(
                    "{:>8}  {}  {:<16} {:<18} {:<18} {:<20} {:<24} epoch {:<4} items {:<8} status {}",
                    e.sequence,
                    e.unix_time_ms,
                    e.actor_party,
                    v1::Role::try_from(e.role).map_or("?", |r| r.as_str_name()),
                    e.rpc.rsplit('/').next().unwrap_or(&e.rpc),
                    e.project,
                    e.recipe,
                    e.epoch,
                    e.item_count,
                    e.status_code
                );
            }
            entries.push(from_wire::entry_from_wire(e)?);
        }
        match audit::verify(&entries, head.as_ref()) {
            Ok(()) => {
                match &head {
                    Some(h) => println!(
                        "audit log verified: {} entries, chain intact, ends at the sealed head (entry {}, {})",
                        entries.len(),
                        h.sequence,
                        hex::encode(h.entry_hash)
                    ),
                    None => println!("audit log verified: empty"),
                }
                Ok(())
            }
            Err(e) => bail!("audit log does NOT verify: {e}"),
        }
    })
}
