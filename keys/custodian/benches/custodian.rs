//! Custodian benchmarks (prints figures; `cargo bench -p renketsu-custodian --bench custodian`).
//!
//! 1. Server-side evaluation on one core, batches of 1,024 blinded elements, with the key
//!    already unsealed (the service's hot path): OPRF (`k·B` per element) and VOPRF (plus one
//!    DLEQ proof per batch). Targets: ≥ 20,000 and ≥ 12,000 elements/s/core.
//! 2. A 1,024-element EvaluateBatch round trip over loopback gRPC with mutual TLS against a
//!    real custodian (SQLite store, quota reservation and audit append included): p50, p99;
//!    the holder's VOPRF proof check is timed separately.
//!    Target: p99 ≤ 150 ms.
//!
//! Environment: `BENCH_ROUNDS` (round trips per mode, default 200).

use std::sync::Arc;
use std::time::{Duration, Instant};

use renketsu_custodian::pki::{DevCa, Role};
use renketsu_custodian::server::{self, TlsMaterial};
use renketsu_custodian::service::{CustodianService, ServiceSettings};
use renketsu_custodian::store::SqliteStore;
use renketsu_keys::lifecycle::SystemClock;
use renketsu_keys::oprf::{
    BlindResult, BlindedElement, EvaluatedElement, OprfClient, OprfServer, Proof, PublicKey,
    SecretKey, VoprfClient, VoprfServer,
};
use renketsu_keys::seal::KekRing;
use renketsu_protocol::v1;
use renketsu_protocol::v1::key_custodian_client::KeyCustodianClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const BATCH: usize = 1024;

fn blinded(n: usize) -> Vec<BlindedElement> {
    let client = OprfClient;
    (0..n)
        .map(|i| {
            client
                .blind(format!("bench-{i}").as_bytes(), &mut rand::rng())
                .unwrap()
                .blinded_element
        })
        .collect()
}

/// Runs `f` (one batch) until at least `min` has passed; elements per second.
fn throughput(min: Duration, mut f: impl FnMut()) -> (f64, usize) {
    f(); // warm-up
    let start = Instant::now();
    let mut batches = 0;
    while start.elapsed() < min {
        f();
        batches += 1;
    }
    #[allow(clippy::cast_precision_loss, reason = "counts are small")]
    let rate = (batches * BATCH) as f64 / start.elapsed().as_secs_f64();
    (rate, batches)
}

fn server_side() {
    let sk = SecretKey::random(&mut rand::rng());
    let batch = blinded(BATCH);
    let oprf = OprfServer::new(sk.clone());
    let voprf = VoprfServer::new(sk);
    let (rate, n) = throughput(Duration::from_secs(3), || {
        std::hint::black_box(oprf.blind_evaluate_batch(&batch));
    });
    println!(
        "server evaluation, OPRF,  1 core, batch {BATCH}: {rate:>9.0} elements/s ({n} batches; target >= 20000)"
    );
    let (rate, n) = throughput(Duration::from_secs(3), || {
        std::hint::black_box(
            voprf
                .blind_evaluate_batch(&batch, &mut rand::rng())
                .unwrap(),
        );
    });
    println!(
        "server evaluation, VOPRF, 1 core, batch {BATCH}: {rate:>9.0} elements/s ({n} batches; target >= 12000)"
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "index into a short vector"
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn round_trips(rounds: usize) {
    let ca = DevCa::generate().unwrap();
    let server_cert = ca
        .issue_server(&["localhost"], &["127.0.0.1".parse().unwrap()])
        .unwrap();
    let tls = TlsMaterial {
        cert_pem: server_cert.cert_pem.clone().into_bytes(),
        key_pem: zeroize::Zeroizing::new(server_cert.key_pem.as_bytes().to_vec()),
        client_ca_pem: ca.cert_pem().into_bytes(),
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = SqliteStore::connect(&url, KekRing::generate(&mut rand::rng()))
        .await
        .unwrap();
    let service = CustodianService::new(store, Arc::new(SystemClock), ServiceSettings::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        server::serve(listener, &tls, service, async {
            let _ = stop_rx.await;
        })
        .await
        .unwrap();
    });

    let client = |party: &str, role: Role| -> KeyCustodianClient<Channel> {
        let cert = ca.issue_client(party, role).unwrap();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca.cert_pem()))
            .identity(Identity::from_pem(&cert.cert_pem, cert.key_pem.as_bytes()));
        let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .tcp_nodelay(true);
        KeyCustodianClient::new(endpoint.connect_lazy())
    };
    let mut admin = client("admin", Role::Admin);
    let mut holder = client("holder-a", Role::DataHolder);
    for (project, mode) in [
        ("bench-oprf", v1::EvaluationMode::Oprf),
        ("bench-voprf", v1::EvaluationMode::Voprf),
    ] {
        let p = admin
            .create_project(v1::CreateProjectRequest {
                project: project.into(),
                recipes: vec!["r".into()],
                clk_fields: vec![],
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
                project: project.into(),
                party: "holder-a".into(),
                declared_records: 100_000_000,
            })
            .await
            .unwrap();
        let pk = PublicKey::from_bytes(&p.recipes[0].public_key).unwrap();
        let voprf = VoprfClient::new(pk);
        // Blinding happens outside the timed region (it is the holder's cost); the round trip
        // covers send → authorize → reserve quota → evaluate (+ proof) → audit → receive.
        // The holder's proof check is timed separately.
        let inputs: Vec<Vec<u8>> = (0..BATCH).map(|i| format!("x{i}").into_bytes()).collect();
        let blinds: Vec<BlindResult> = inputs
            .iter()
            .map(|x| match mode {
                v1::EvaluationMode::Oprf => OprfClient.blind(x, &mut rand::rng()).unwrap(),
                _ => voprf.blind(x, &mut rand::rng()).unwrap(),
            })
            .collect();
        let elements: Vec<Vec<u8>> = blinds
            .iter()
            .map(|b| b.blinded_element.to_bytes().to_vec())
            .collect();
        let mut times = Vec::with_capacity(rounds);
        let mut verify_times = Vec::with_capacity(rounds);
        for round in 0..=rounds {
            let request = v1::EvaluateBatchRequest {
                project: project.into(),
                recipe: "r".into(),
                epoch: 1,
                blinded_elements: elements.clone(),
                mode: mode as i32,
            };
            let start = Instant::now();
            let r = holder.evaluate_batch(request).await.unwrap().into_inner();
            let rtt = start.elapsed();
            let start = Instant::now();
            if let Some(proof) = &r.proof {
                let evaluated: Vec<EvaluatedElement> = r
                    .evaluated_elements
                    .iter()
                    .map(|e| EvaluatedElement::from_bytes(e).unwrap())
                    .collect();
                voprf
                    .finalize_element_batch(&blinds, &evaluated, &Proof::from_bytes(proof).unwrap())
                    .unwrap();
            }
            let verify = start.elapsed();
            if round > 0 {
                // Round 0 warms up the connection and the key cache.
                times.push(rtt);
                verify_times.push(verify);
            }
        }
        times.sort();
        verify_times.sort();
        let name = if mode == v1::EvaluationMode::Oprf {
            "OPRF "
        } else {
            "VOPRF"
        };
        println!(
            "round trip, {name}, batch {BATCH}, loopback gRPC + mTLS: p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms ({rounds} rounds; target p99 <= 150 ms)",
            percentile(&times, 0.50).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3,
        );
        if mode == v1::EvaluationMode::Voprf {
            println!(
                "  holder-side proof check + unblind after it (not in the round trip): p50 {:>6.1} ms  p99 {:>6.1} ms",
                percentile(&verify_times, 0.50).as_secs_f64() * 1e3,
                percentile(&verify_times, 0.99).as_secs_f64() * 1e3,
            );
        }
    }
    let _ = stop_tx.send(());
    server.await.unwrap();
}

fn main() {
    // `cargo test --benches` runs bench targets with --test-ish arguments; only run for real
    // under `cargo bench` (which passes --bench).
    if !std::env::args().any(|a| a == "--bench") {
        println!("custodian bench: skipped (run with `cargo bench`)");
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "machine: {cores} logical cores available to this process; single-thread figures are per core"
    );
    server_side();
    let rounds = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(round_trips(rounds));
}
