//! Refusals with clear statuses (quota exhausted, revoked key, retired epoch, wrong project,
//! wrong mode, bad batches) and the behaviour of allowed calls (re-keying deltas, wrapped CLK
//! keys, OPRF vs VOPRF responses), over loopback with real mutual TLS.

mod support;

use renketsu_custodian::pki::Role;
use renketsu_custodian::service::ServiceSettings;
use renketsu_custodian::store::CustodianStore as _;
use renketsu_keys::oprf::{EvaluatedElement, OprfClient, Proof, PublicKey, RekeyDelta, rekey};
use renketsu_keys::wrap::{self, HolderKeyPair};
use renketsu_protocol::v1;
use renketsu_protocol::v1::key_custodian_client::KeyCustodianClient;
use support::{Pki, TestServer, blind_voprf, wire};
use tonic::Code;
use tonic::transport::Channel;

const EVALUATE: &str = "/renketsu.v1.KeyCustodian/EvaluateBatch";

async fn project(
    admin: &mut KeyCustodianClient<Channel>,
    name: &str,
    mode: v1::EvaluationMode,
    declared: u64,
) -> PublicKey {
    let p = admin
        .create_project(v1::CreateProjectRequest {
            project: name.into(),
            recipes: vec!["r1".into()],
            clk_fields: vec!["kana".into()],
            mode: mode as i32,
            linkage_unit: "lu".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    admin
        .enrol_holder(v1::EnrolHolderRequest {
            project: name.into(),
            party: "holder-a".into(),
            declared_records: declared,
        })
        .await
        .unwrap();
    PublicKey::from_bytes(&p.recipes[0].public_key).unwrap()
}

fn request(project: &str, epoch: u64, elements: Vec<Vec<u8>>) -> v1::EvaluateBatchRequest {
    v1::EvaluateBatchRequest {
        project: project.into(),
        recipe: "r1".into(),
        epoch,
        blinded_elements: elements,
        mode: v1::EvaluationMode::Voprf as i32,
    }
}

fn inputs(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("input-{i}").into_bytes()).collect()
}

/// Evaluates `xs` under `epoch` and returns the unblinded elements k·H(x), checking the proof.
async fn tokens(
    holder: &mut KeyCustodianClient<Channel>,
    project: &str,
    epoch: u64,
    pk: PublicKey,
    xs: &[Vec<u8>],
) -> Result<Vec<[u8; 32]>, tonic::Status> {
    let refs: Vec<&[u8]> = xs.iter().map(Vec::as_slice).collect();
    let (client, blinds) = blind_voprf(pk, &refs);
    let r = holder
        .evaluate_batch(request(project, epoch, wire(&blinds)))
        .await?
        .into_inner();
    assert_eq!(r.epoch, epoch);
    let evaluated: Vec<EvaluatedElement> = r
        .evaluated_elements
        .iter()
        .map(|e| EvaluatedElement::from_bytes(e).unwrap())
        .collect();
    let proof = Proof::from_bytes(r.proof.as_deref().expect("VOPRF returns a proof")).unwrap();
    Ok(client
        .finalize_element_batch(&blinds, &evaluated, &proof)
        .expect("proof verifies against the published key"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exhaustion_is_refused_with_resource_exhausted_and_audited() {
    let pki = Pki::new();
    let server = TestServer::start(&pki, ServiceSettings::default()).await;
    let mut admin = server.client(&pki, "admin", Role::Admin);
    // 4 records × slack 1.5 = quota 6 per (recipe, epoch).
    let pk = project(&mut admin, "p", v1::EvaluationMode::Voprf, 4).await;
    let mut holder = server.client(&pki, "holder-a", Role::DataHolder);

    tokens(&mut holder, "p", 1, pk, &inputs(4)).await.unwrap();
    let err = tokens(&mut holder, "p", 1, pk, &inputs(3))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("used 4 of 6") && err.message().contains("batch of 3"),
        "{}",
        err.message()
    );
    // The refusal reserved nothing: the remaining 2 still fit.
    tokens(&mut holder, "p", 1, pk, &inputs(2)).await.unwrap();
    let err = tokens(&mut holder, "p", 1, pk, &inputs(1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);

    let evals: Vec<_> = server
        .audit()
        .await
        .into_iter()
        .filter(|e| e.event.rpc == EVALUATE)
        .map(|e| (e.event.item_count, e.event.status_code))
        .collect();
    let exhausted = Code::ResourceExhausted as u32;
    assert_eq!(evals, [(4, 0), (3, exhausted), (2, 0), (1, exhausted)]);

    // A rotation opens a fresh budget for the new epoch.
    let rotated = admin
        .rotate_epoch(v1::RotateEpochRequest {
            project: "p".into(),
            recipe: "r1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let pk2 = PublicKey::from_bytes(&rotated.public_key).unwrap();
    tokens(&mut holder, "p", 2, pk2, &inputs(6)).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retired_and_revoked_epochs_and_wrong_projects_are_refused() {
    let pki = Pki::new();
    let server = TestServer::start(&pki, ServiceSettings::default()).await;
    let mut admin = server.client(&pki, "admin", Role::Admin);
    let pk1 = project(&mut admin, "p", v1::EvaluationMode::Voprf, 100).await;
    project(&mut admin, "other", v1::EvaluationMode::Voprf, 100).await;
    let mut holder = server.client(&pki, "holder-a", Role::DataHolder);
    let xs = inputs(5);
    let t1 = tokens(&mut holder, "p", 1, pk1, &xs).await.unwrap();

    // Retired: after a rotation, epoch 1 no longer evaluates, and the message names the
    // active epoch.
    let rotated = admin
        .rotate_epoch(v1::RotateEpochRequest {
            project: "p".into(),
            recipe: "r1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let pk2 = PublicKey::from_bytes(&rotated.public_key).unwrap();
    let err = tokens(&mut holder, "p", 1, pk1, &xs).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("epoch 1")
            && err.message().contains("retired")
            && err.message().contains("active epoch is 2"),
        "{}",
        err.message()
    );
    let t2 = tokens(&mut holder, "p", 2, pk2, &xs).await.unwrap();
    assert_ne!(t1, t2, "a new epoch gives new tokens");

    // The linkage unit's Δ moves epoch-1 tokens to epoch 2 without any identifier.
    let mut lu = server.client(&pki, "lu", Role::LinkageUnit);
    let delta = lu
        .get_rekey_delta(v1::GetRekeyDeltaRequest {
            project: "p".into(),
            recipe: "r1".into(),
            from_epoch: 1,
            to_epoch: 2,
        })
        .await
        .unwrap()
        .into_inner();
    let delta = RekeyDelta::from_bytes(&delta.delta).unwrap();
    let moved: Vec<[u8; 32]> = t1.iter().map(|t| rekey(t, &delta).unwrap()).collect();
    assert_eq!(moved, t2, "re-keyed tokens equal fresh epoch-2 tokens");

    // Wrong project: holder-a is enrolled in "other" too, but not in "ghost"; and a project
    // that does not exist looks the same as one the holder is not part of.
    let err = tokens(&mut holder, "ghost", 1, pk1, &xs).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message()
            .contains("holder-a is not enrolled in project \"ghost\""),
        "{}",
        err.message()
    );
    let mut stranger = server.client(&pki, "holder-x", Role::DataHolder);
    let err = tokens(&mut stranger, "p", 2, pk2, &xs).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut other_lu = server.client(&pki, "lu-other", Role::LinkageUnit);
    let err = other_lu
        .get_rekey_delta(v1::GetRekeyDeltaRequest {
            project: "p".into(),
            recipe: "r1".into(),
            from_epoch: 1,
            to_epoch: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("not the linkage unit"),
        "{}",
        err.message()
    );

    // Revoked: the active epoch revoked → no evaluation and no deltas from or to it.
    admin
        .revoke_epoch(v1::RevokeEpochRequest {
            project: "p".into(),
            recipe: "r1".into(),
            epoch: 2,
        })
        .await
        .unwrap();
    let err = tokens(&mut holder, "p", 2, pk2, &xs).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("revoked") && err.message().contains("no active epoch"),
        "{}",
        err.message()
    );
    let err = lu
        .get_rekey_delta(v1::GetRekeyDeltaRequest {
            project: "p".into(),
            recipe: "r1".into(),
            from_epoch: 1,
            to_epoch: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("revoked"), "{}", err.message());
    let err = admin
        .revoke_epoch(v1::RevokeEpochRequest {
            project: "p".into(),
            recipe: "r1".into(),
            epoch: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "revoking twice: {err:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_batches_and_wrong_mode_are_invalid() {
    let pki = Pki::new();
    let settings = ServiceSettings {
        max_batch: 8,
        ..ServiceSettings::default()
    };
    let server = TestServer::start(&pki, settings).await;
    let mut admin = server.client(&pki, "admin", Role::Admin);
    let pk = project(&mut admin, "p", v1::EvaluationMode::Voprf, 100).await;
    let mut holder = server.client(&pki, "holder-a", Role::DataHolder);

    let err = tokens(&mut holder, "p", 1, pk, &inputs(9))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("between 1 and 8"),
        "{}",
        err.message()
    );
    let err = holder
        .evaluate_batch(request("p", 1, vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let refs: Vec<&[u8]> = vec![b"x", b"y"];
    let (_, blinds) = blind_voprf(pk, &refs);
    let mut elements = wire(&blinds);
    elements[1] = vec![0u8; 32]; // the identity element
    let err = holder
        .evaluate_batch(request("p", 1, elements))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("blinded element 1"),
        "{}",
        err.message()
    );

    let mut oprf = request("p", 1, wire(&blinds));
    oprf.mode = v1::EvaluationMode::Oprf as i32;
    let err = holder.evaluate_batch(oprf).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("VOPRF"), "{}", err.message());
    let mut unspecified = request("p", 1, wire(&blinds));
    unspecified.mode = 0;
    assert_eq!(
        holder.evaluate_batch(unspecified).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // None of these refused batches used quota.
    assert_eq!(
        server
            .store()
            .evaluations_used("p", "holder-a", "r1", 1)
            .await
            .unwrap(),
        0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oprf_projects_return_no_proof_and_match_direct_evaluation() {
    let pki = Pki::new();
    let server = TestServer::start(&pki, ServiceSettings::default()).await;
    let mut admin = server.client(&pki, "admin", Role::Admin);
    project(&mut admin, "p", v1::EvaluationMode::Oprf, 100).await;
    let mut holder = server.client(&pki, "holder-a", Role::DataHolder);
    let client = OprfClient;
    let blinds: Vec<_> = inputs(3)
        .iter()
        .map(|x| client.blind(x, &mut rand::rng()).unwrap())
        .collect();
    let mut req = request("p", 1, wire(&blinds));
    req.mode = v1::EvaluationMode::Oprf as i32;
    let r = holder.evaluate_batch(req).await.unwrap().into_inner();
    assert!(r.proof.is_none());
    // Compare with the key the store holds: k·H(x) computed directly.
    let key = server
        .store()
        .epoch_key("p", "r1", 1)
        .await
        .unwrap()
        .secret_key()
        .unwrap();
    let direct = renketsu_keys::oprf::OprfServer::new(key);
    for ((x, b), e) in inputs(3).iter().zip(&blinds).zip(&r.evaluated_elements) {
        let e = EvaluatedElement::from_bytes(e).unwrap();
        assert_eq!(
            client.finalize_element(b, &e),
            direct.evaluate_element(x).unwrap()
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapped_clk_keys_open_only_for_the_holder_project_and_field() {
    let pki = Pki::new();
    let server = TestServer::start(&pki, ServiceSettings::default()).await;
    let mut admin = server.client(&pki, "admin", Role::Admin);
    project(&mut admin, "p", v1::EvaluationMode::Voprf, 100).await;
    let mut holder = server.client(&pki, "holder-a", Role::DataHolder);
    let keys = HolderKeyPair::generate();
    let r = holder
        .get_wrapped_clk_key(v1::GetWrappedClkKeyRequest {
            project: "p".into(),
            field: "kana".into(),
            holder_public_key: keys.public_key().to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.algorithm,
        v1::WrapAlgorithm::HpkeX25519Sha256Chacha20poly1305 as i32
    );
    let clk = wrap::unwrap(&keys, "p", "kana", &r.encapsulated_key, &r.ciphertext).unwrap();
    assert_eq!(*clk, *server.store().clk_key("p", "kana").await.unwrap());
    assert!(
        wrap::unwrap(
            &HolderKeyPair::generate(),
            "p",
            "kana",
            &r.encapsulated_key,
            &r.ciphertext
        )
        .is_err()
    );

    let err = holder
        .get_wrapped_clk_key(v1::GetWrappedClkKeyRequest {
            project: "p".into(),
            field: "no-such-field".into(),
            holder_public_key: keys.public_key().to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = holder
        .get_wrapped_clk_key(v1::GetWrappedClkKeyRequest {
            project: "p".into(),
            field: "kana".into(),
            holder_public_key: vec![1; 31],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop().await;
}

/// Project names follow the one rule of `renketsu_keys::names` (as in the linkage unit and
/// the key store), and a huge name is refused without being audited or echoed whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_names_are_checked_and_audited_strings_are_bounded() {
    let pki = Pki::new();
    let server = TestServer::start(&pki, ServiceSettings::default()).await;
    let mut admin = server.client(&pki, "admin", Role::Admin);
    let huge = "x".repeat(3 << 20);
    for name in ["../x", "a b", "プロジェクト", huge.as_str()] {
        let e = admin
            .create_project(v1::CreateProjectRequest {
                project: name.into(),
                recipes: vec!["r1".into()],
                clk_fields: vec![],
                mode: v1::EvaluationMode::Voprf as i32,
                linkage_unit: "lu".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name:.20}: {e:?}");
        assert!(
            e.message().len() < 1000,
            "{} bytes echoed",
            e.message().len()
        );
    }
    let mut holder = server.client(&pki, "holder-a", Role::DataHolder);
    let e = holder
        .evaluate_batch(request(&huge, 1, inputs(1)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let audit = server.audit().await;
    assert_eq!(audit.len(), 5);
    for entry in &audit {
        assert!(
            entry.event.project.len() <= 300,
            "{} bytes audited",
            entry.event.project.len()
        );
    }
    server.stop().await;
}

/// The custodian's SQLite store (sealed keys, audit log) is created readable by its owner
/// only; SQLite gives its -wal and -shm files the same mode.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_is_created_0600() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custodian.db");
    let store = renketsu_custodian::store::SqliteStore::connect(
        &format!("sqlite://{}", path.display()),
        renketsu_keys::seal::KekRing::generate(&mut rand::rng()),
    )
    .await
    .unwrap();
    store.audit_head().await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", path.display());
        if let Ok(m) = std::fs::metadata(&p) {
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{p}");
        }
    }
    store.close().await;
}
