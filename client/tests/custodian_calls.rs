//! The client library against a real key custodian over mutual TLS on loopback: the admin's
//! calls, the holder's evaluation, the linkage unit's re-keying delta (checked against two
//! evaluations of the same input) and the auditor's chain, with PEM files on disk as a
//! deployment has them.

use std::path::PathBuf;
use std::sync::Arc;

use curve25519_dalek::Scalar;
use curve25519_dalek::ristretto::CompressedRistretto;
use renketsu_client::audit::{entry_from_wire, head_from_wire};
use renketsu_client::custodian::{
    BatchEvaluator as _, ClientError, ConnectConfig, CustodianClient, EvalMode, NewProject,
    evaluate_all,
};
use renketsu_custodian::service::ServiceSettings;
use renketsu_custodian::store::SqliteStore;
use renketsu_keys::lifecycle::MockClock;
use renketsu_keys::seal::KekRing;
use renketsu_rpc::pki::{DevCa, Role};
use renketsu_rpc::tls::TlsMaterial;
use tonic::Code;

struct Custodian {
    url: String,
    dir: tempfile::TempDir,
    ca: DevCa,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Custodian {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        let server = ca
            .issue_server(&["localhost"], &["127.0.0.1".parse().unwrap()])
            .unwrap();
        let tls = TlsMaterial {
            cert_pem: server.cert_pem.into_bytes(),
            key_pem: zeroize::Zeroizing::new(server.key_pem.as_bytes().to_vec()),
            client_ca_pem: ca.cert_pem().into_bytes(),
        };
        let db = format!("sqlite://{}", dir.path().join("custodian.db").display());
        let store = SqliteStore::connect(&db, KekRing::generate(&mut rand::rng()))
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            renketsu_custodian::server::run(
                listener,
                &tls,
                store,
                Arc::new(MockClock::default()),
                ServiceSettings::default(),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
        });
        Self {
            url,
            dir,
            ca,
            stop: Some(stop),
        }
    }

    /// A client for (party, role), its certificate and key written as PEM files.
    fn client(&self, party: &str, role: Role) -> CustodianClient {
        let issued = self.ca.issue_client(party, role).unwrap();
        let file = |ext: &str| -> PathBuf { self.dir.path().join(format!("{party}.{ext}")) };
        std::fs::write(file("pem"), &issued.cert_pem).unwrap();
        std::fs::write(file("key"), issued.key_pem.as_bytes()).unwrap();
        let config = ConnectConfig::new(
            self.url.clone(),
            &self.dir.path().join("ca.pem"),
            &file("pem"),
            &file("key"),
        );
        CustodianClient::connect(&config).unwrap()
    }
}

impl Drop for Custodian {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn point(bytes: &[u8; 32]) -> curve25519_dalek::RistrettoPoint {
    CompressedRistretto(*bytes).decompress().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_holder_linkage_unit_and_auditor_calls() {
    let custodian = Custodian::start().await;
    let admin = custodian.client("admin", Role::Admin);
    let project = admin
        .create_project(NewProject {
            project: "p".into(),
            recipes: vec!["r/v1".into()],
            clk_fields: vec![],
            mode: EvalMode::Voprf,
            linkage_unit: "lu-1".into(),
        })
        .await
        .unwrap();
    assert_eq!((project.name.as_str(), project.recipes[0].epoch), ("p", 1));
    let holder = admin.enrol_holder("p", "holder-a", 1000).await.unwrap();
    assert_eq!(holder.party, "holder-a");
    assert!(holder.evaluation_quota >= 1000);
    let listed = admin.list_projects().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].holders[0].party, "holder-a");
    // A second create of the same project is refused once, not retried.
    let again = admin
        .create_project(NewProject {
            project: "p".into(),
            recipes: vec!["r/v1".into()],
            clk_fields: vec![],
            mode: EvalMode::Voprf,
            linkage_unit: "lu-1".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(
        again,
        ClientError::Status {
            code: Code::AlreadyExists,
            attempts: 1,
            ..
        }
    ));

    // The holder's tokens under epoch 1, then under epoch 2 after a rotation.
    let h = custodian.client("holder-a", Role::DataHolder);
    let inputs: Vec<&[u8]> = vec![b"alice", b"bob", b"carol"];
    let k1 = h.active_key("p", "r/v1").await.unwrap();
    let t1 = evaluate_all(&h, "p", "r/v1", k1, EvalMode::Voprf, &inputs, 2)
        .await
        .unwrap();
    let rotated = admin.rotate_epoch("p", "r/v1").await.unwrap();
    assert_eq!((rotated.previous_epoch, rotated.epoch), (1, 2));
    let k2 = h.active_key("p", "r/v1").await.unwrap();
    assert_eq!(k2.epoch, 2);
    let t2 = evaluate_all(&h, "p", "r/v1", k2, EvalMode::Voprf, &inputs, 2)
        .await
        .unwrap();
    assert_ne!(t1, t2);

    // The linkage unit's delta moves every epoch-1 token onto its epoch-2 token.
    let lu = custodian.client("lu-1", Role::LinkageUnit);
    let delta = lu.rekey_delta("p", "r/v1", 1, 2).await.unwrap();
    let delta = Option::<Scalar>::from(Scalar::from_canonical_bytes(*delta)).unwrap();
    for (a, b) in t1.iter().zip(&t2) {
        assert_eq!((delta * point(a)).compress().to_bytes(), *b);
    }
    // Nobody else gets a delta: not the holder, not another linkage unit.
    for (party, role) in [("holder-a", Role::DataHolder), ("lu-2", Role::LinkageUnit)] {
        let e = custodian
            .client(party, role)
            .rekey_delta("p", "r/v1", 1, 2)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(Code::PermissionDenied), "{party}: {e}");
    }

    // The auditor reads the log up to the sealed head and the chain verifies.
    let auditor = custodian.client("auditor", Role::Auditor);
    let head = head_from_wire(&auditor.audit_head().await.unwrap())
        .unwrap()
        .unwrap();
    let mut wire = Vec::new();
    auditor
        .read_audit_log(1, 0, |e| {
            wire.push(e);
            true
        })
        .await
        .unwrap();
    let entries: Vec<_> = wire
        .iter()
        .map(|e| entry_from_wire(e).unwrap())
        .filter(|e| e.sequence <= head.sequence)
        .collect();
    assert_eq!(entries.len() as u64, head.sequence);
    renketsu_keys::audit::verify(&entries, Some(&head)).unwrap();
    // Every call above is in it, refused ones included (the duplicate create, two deltas).
    let refused = entries.iter().filter(|e| e.event.status_code != 0).count();
    assert_eq!(refused, 3);
}
