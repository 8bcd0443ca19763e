//! `renketsu audit verify`: read the custodian's audit log and check its hash chain against the
//! sealed head (SPEC.md §8.8).

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use renketsu_keys::audit::{self, AuditEntry, AuditEvent, AuditHead};
use renketsu_protocol::v1;

use crate::custodian_conn::{CustodianArgs, status_error};

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

fn hash32(what: &str, sequence: u64, bytes: &[u8]) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| {
        anyhow::anyhow!(
            "audit entry {sequence}: {what} is {} bytes, not 32 (the entry was changed)",
            bytes.len()
        )
    })
}

fn from_wire(e: &v1::AuditEntry) -> Result<AuditEntry> {
    Ok(AuditEntry {
        sequence: e.sequence,
        event: AuditEvent {
            unix_time_ms: e.unix_time_ms,
            actor_party: e.actor_party.clone(),
            role: e.role,
            rpc: e.rpc.clone(),
            project: e.project.clone(),
            recipe: e.recipe.clone(),
            epoch: e.epoch,
            item_count: e.item_count,
            status_code: e.status_code,
        },
        prev_hash: hash32("prev_hash", e.sequence, &e.prev_hash)?,
        entry_hash: hash32("entry_hash", e.sequence, &e.entry_hash)?,
    })
}

fn verify(conn: &CustodianArgs, show: bool) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let mut client = conn.connect()?;
        let head = client
            .get_audit_head(v1::GetAuditHeadRequest {})
            .await
            .map_err(|s| status_error("GetAuditHead", &s))?
            .into_inner();
        let head = if head.sequence == 0 {
            None
        } else {
            Some(AuditHead {
                sequence: head.sequence,
                entry_hash: hash32("head entry_hash", head.sequence, &head.entry_hash)?,
            })
        };
        let mut entries = Vec::new();
        if let Some(h) = &head {
            // Read up to the head only: calls made after it (this one included) are not part
            // of what the head seals. An entry deleted from the middle then shows as a gap,
            // rows deleted from the end as a log shorter than the head.
            let limit = u32::try_from(h.sequence).unwrap_or(u32::MAX);
            let mut stream = client
                .read_audit_log(v1::ReadAuditLogRequest {
                    from_sequence: 1,
                    limit,
                })
                .await
                .map_err(|s| status_error("ReadAuditLog", &s))?
                .into_inner();
            while let Some(e) = stream
                .message()
                .await
                .map_err(|s| status_error("ReadAuditLog", &s))?
            {
                if e.sequence > h.sequence {
                    break;
                }
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
                entries.push(from_wire(&e)?);
            }
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
