//! Authorization matrix over loopback with real mutual TLS: every RPC × every kind of caller.
//! Only the cells the policy allows succeed; every call that reaches the custodian is audited
//! with its status; a client without a certificate never reaches a handler.

mod support;

use renketsu_custodian::auth::Rpc;
use renketsu_custodian::pki::Role;
use renketsu_custodian::service::ServiceSettings;
use renketsu_custodian::store::CustodianStore as _;
use renketsu_keys::oprf::PublicKey;
use renketsu_keys::wrap::HolderKeyPair;
use renketsu_protocol::v1;
use renketsu_protocol::v1::key_custodian_client::KeyCustodianClient;
use support::{Backend, Pki, TestDb, TestServer, blind_voprf, wire};
use tonic::Code;
use tonic::transport::Channel;

/// The callers of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Admin,
    Auditor,
    /// The linkage unit named for project p1.
    LinkageUnit,
    /// A linkage unit named for another project only.
    OtherLinkageUnit,
    /// A holder enrolled in p1.
    Holder,
    /// A holder enrolled in p2 only.
    OtherProjectHolder,
    /// A holder enrolled nowhere.
    UnenrolledHolder,
    /// No client certificate.
    NoCertificate,
}

const CALLERS: [Caller; 8] = [
    Caller::Admin,
    Caller::Auditor,
    Caller::LinkageUnit,
    Caller::OtherLinkageUnit,
    Caller::Holder,
    Caller::OtherProjectHolder,
    Caller::UnenrolledHolder,
    Caller::NoCertificate,
];

impl Caller {
    fn identity(self) -> Option<(&'static str, Role)> {
        match self {
            Caller::Admin => Some(("admin", Role::Admin)),
            Caller::Auditor => Some(("auditor", Role::Auditor)),
            Caller::LinkageUnit => Some(("lu-1", Role::LinkageUnit)),
            Caller::OtherLinkageUnit => Some(("lu-2", Role::LinkageUnit)),
            Caller::Holder => Some(("holder-a", Role::DataHolder)),
            Caller::OtherProjectHolder => Some(("holder-b", Role::DataHolder)),
            Caller::UnenrolledHolder => Some(("holder-z", Role::DataHolder)),
            Caller::NoCertificate => None,
        }
    }

    /// The policy under test, written out independently of the implementation.
    fn allowed(self, rpc: Rpc) -> bool {
        match rpc {
            Rpc::CreateProject
            | Rpc::EnrolHolder
            | Rpc::RotateEpoch
            | Rpc::RevokeEpoch
            | Rpc::ListProjects => self == Caller::Admin,
            Rpc::GetPublicKey | Rpc::EvaluateBatch | Rpc::GetWrappedClkKey => {
                self == Caller::Holder
            }
            Rpc::GetRekeyDelta => self == Caller::LinkageUnit,
            Rpc::ReadAuditLog | Rpc::GetAuditHead => self == Caller::Auditor,
        }
    }
}

/// A call refused by the TLS layer, before any handler.
fn is_transport_failure(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    ) && !s.message().contains("permission denied")
}

struct Fixture {
    pk_p1_epoch2: PublicKey,
}

async fn setup(server: &TestServer, pki: &Pki) -> Fixture {
    let mut admin = server.client(pki, "admin", Role::Admin);
    for (project, lu) in [("p1", "lu-1"), ("p2", "lu-2"), ("p-admin", "lu-1")] {
        admin
            .create_project(v1::CreateProjectRequest {
                project: project.into(),
                recipes: vec!["r1".into()],
                clk_fields: vec!["f1".into()],
                mode: v1::EvaluationMode::Voprf as i32,
                linkage_unit: lu.into(),
            })
            .await
            .unwrap();
    }
    for (project, party) in [("p1", "holder-a"), ("p2", "holder-b")] {
        admin
            .enrol_holder(v1::EnrolHolderRequest {
                project: project.into(),
                party: party.into(),
                declared_records: 1000,
            })
            .await
            .unwrap();
    }
    // p1/r1 gets epoch 2 so that a re-keying delta 1 → 2 exists.
    let rotated = admin
        .rotate_epoch(v1::RotateEpochRequest {
            project: "p1".into(),
            recipe: "r1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((rotated.previous_epoch, rotated.epoch), (1, 2));
    Fixture {
        pk_p1_epoch2: PublicKey::from_bytes(&rotated.public_key).unwrap(),
    }
}

/// Makes one call of `rpc` as the matrix defines it; the result's code (OK or the error).
async fn call(
    client: &mut KeyCustodianClient<Channel>,
    rpc: Rpc,
    fx: &Fixture,
    cell: usize,
) -> Result<(), tonic::Status> {
    match rpc {
        Rpc::CreateProject => client
            .create_project(v1::CreateProjectRequest {
                project: format!("new-{cell}"),
                recipes: vec!["r1".into()],
                clk_fields: vec![],
                mode: v1::EvaluationMode::Oprf as i32,
                linkage_unit: "lu-1".into(),
            })
            .await
            .map(drop),
        Rpc::EnrolHolder => client
            .enrol_holder(v1::EnrolHolderRequest {
                project: "p-admin".into(),
                party: format!("holder-{cell}"),
                declared_records: 10,
            })
            .await
            .map(drop),
        Rpc::RotateEpoch => client
            .rotate_epoch(v1::RotateEpochRequest {
                project: "p-admin".into(),
                recipe: "r1".into(),
            })
            .await
            .map(drop),
        Rpc::RevokeEpoch => client
            .revoke_epoch(v1::RevokeEpochRequest {
                project: "p-admin".into(),
                recipe: "r1".into(),
                epoch: 1,
            })
            .await
            .map(drop),
        Rpc::ListProjects => client
            .list_projects(v1::ListProjectsRequest {})
            .await
            .map(drop),
        Rpc::GetPublicKey => client
            .get_public_key(v1::GetPublicKeyRequest {
                project: "p1".into(),
                recipe: "r1".into(),
                epoch: None,
            })
            .await
            .map(|r| assert_eq!(r.into_inner().epoch, 2)),
        Rpc::EvaluateBatch => {
            let inputs: [&[u8]; 3] = [b"a", b"b", b"c"];
            let (voprf, blinds) = blind_voprf(fx.pk_p1_epoch2, &inputs);
            let r = client
                .evaluate_batch(v1::EvaluateBatchRequest {
                    project: "p1".into(),
                    recipe: "r1".into(),
                    epoch: 2,
                    blinded_elements: wire(&blinds),
                    mode: v1::EvaluationMode::Voprf as i32,
                })
                .await?
                .into_inner();
            // An allowed evaluation is a real one: the proof verifies against the key.
            let evaluated: Vec<_> = r
                .evaluated_elements
                .iter()
                .map(|e| renketsu_keys::oprf::EvaluatedElement::from_bytes(e).unwrap())
                .collect();
            let proof =
                renketsu_keys::oprf::Proof::from_bytes(r.proof.as_deref().unwrap()).unwrap();
            voprf
                .finalize_batch(&inputs, &blinds, &evaluated, &proof)
                .unwrap();
            Ok(())
        }
        Rpc::GetWrappedClkKey => client
            .get_wrapped_clk_key(v1::GetWrappedClkKeyRequest {
                project: "p1".into(),
                field: "f1".into(),
                holder_public_key: HolderKeyPair::derive(&[5; 32]).public_key().to_vec(),
            })
            .await
            .map(drop),
        Rpc::GetRekeyDelta => client
            .get_rekey_delta(v1::GetRekeyDeltaRequest {
                project: "p1".into(),
                recipe: "r1".into(),
                from_epoch: 1,
                to_epoch: 2,
            })
            .await
            .map(|r| assert_eq!(r.into_inner().delta.len(), 32)),
        Rpc::ReadAuditLog => {
            let mut stream = client
                .read_audit_log(v1::ReadAuditLogRequest {
                    from_sequence: 1,
                    limit: 0,
                })
                .await?
                .into_inner();
            let mut n = 0;
            while stream.message().await?.is_some() {
                n += 1;
            }
            assert!(n > 0);
            Ok(())
        }
        Rpc::GetAuditHead => client
            .get_audit_head(v1::GetAuditHeadRequest {})
            .await
            .map(|r| assert!(r.into_inner().sequence > 0)),
    }
}

/// The matrix on SQLite and, with `RENKETSU_TEST_PG_URL` (always under CI), on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_cells_succeed_and_every_call_is_audited() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(db) = TestDb::new(backend, "authz_matrix").await else {
            continue;
        };
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start_on(&pki, ServiceSettings::default(), &db.url, dir).await;
        matrix(&pki, server).await;
        db.cleanup().await;
    }
}

async fn matrix(pki: &Pki, server: TestServer) {
    let fx = setup(&server, pki).await;

    let mut failures = Vec::new();
    let mut cell = 0;
    for caller in CALLERS {
        let mut client = match caller.identity() {
            Some((party, role)) => server.client(pki, party, role),
            None => server.client_with(pki, None),
        };
        for rpc in Rpc::ALL {
            cell += 1;
            let before = server.audit().await.len();
            let result = call(&mut client, rpc, &fx, cell).await;
            let allowed = caller.allowed(rpc);
            let audit = server.audit().await;
            match (&result, allowed) {
                (Ok(()), true) => {}
                (Err(s), false) => {
                    let ok = match caller {
                        // The server aborts the TLS handshake; depending on when the client
                        // notices (TLS 1.3 finishes the client side first) tonic reports it as
                        // a transport error, a cancelled or an unavailable call. What matters:
                        // no handler ran (checked against the audit log below).
                        Caller::NoCertificate => is_transport_failure(s),
                        _ => s.code() == Code::PermissionDenied,
                    };
                    if !ok {
                        failures.push(format!(
                            "{caller:?} × {rpc}: wrong refusal {:?}: {}",
                            s.code(),
                            s.message()
                        ));
                    }
                }
                (Ok(()), false) => {
                    failures.push(format!("{caller:?} × {rpc}: allowed but should be refused"))
                }
                (Err(s), true) => failures.push(format!(
                    "{caller:?} × {rpc}: refused but should be allowed: {:?} {}",
                    s.code(),
                    s.message()
                )),
            }
            // Audit: exactly one new entry per call that reached the custodian, naming the
            // caller, the RPC and the status it ended with.
            match caller.identity() {
                None => {
                    if audit.len() != before {
                        failures.push(format!("{caller:?} × {rpc}: audited without a certificate"));
                    }
                }
                Some((party, role)) => {
                    // ReadAuditLog is audited before its entries stream, so it sees itself.
                    let last = audit.last().unwrap();
                    let code = result.as_ref().err().map_or(0, |s| s.code() as u32);
                    if audit.len() != before + 1
                        || last.event.actor_party != party
                        || last.event.role != role.to_proto() as i32
                        || last.event.rpc != rpc.path()
                        || last.event.status_code != code
                    {
                        failures.push(format!(
                            "{caller:?} × {rpc}: audit entry wrong or missing: {last:?}"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "matrix failures:\n{}",
        failures.join("\n")
    );

    // The whole log still verifies.
    let head = server.store().audit_head().await.unwrap();
    renketsu_keys::audit::verify(&server.audit().await, head.as_ref()).unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_another_ca_are_refused_at_the_handshake() {
    let pki = Pki::new();
    let server = TestServer::start(&pki, ServiceSettings::default()).await;
    let rogue = Pki::new();
    let cert = rogue.ca.issue_client("admin", Role::Admin).unwrap();
    let mut client = server.client_with(&pki, Some(&cert));
    let err = client
        .list_projects(v1::ListProjectsRequest {})
        .await
        .unwrap_err();
    assert!(is_transport_failure(&err), "{err:?}");
    assert!(server.audit().await.is_empty());
    server.stop().await;
}
