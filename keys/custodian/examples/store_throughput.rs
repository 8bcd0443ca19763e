//! Prints throughput and latency of the store operations on the hot path of an evaluation
//! (quota reservation, audit append, epoch key read), for one backend.
//!
//! ```text
//! cargo run --release -p renketsu-custodian --example store_throughput -- [URL] [N]
//! ```
//! URL defaults to a fresh SQLite file in a temporary directory; for PostgreSQL pass the URL of
//! an empty database (e.g. create one on the server of `scripts/postgres.sh`). N defaults to
//! 1000 operations per measurement.

use std::time::{Duration, Instant};

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use renketsu_custodian::store::{CustodianStore, HolderRecord, NewProject, Store, verify_audit};
use renketsu_keys::audit::AuditEvent;
use renketsu_keys::lifecycle::{Clock as _, SystemClock};
use renketsu_keys::seal::KekRing;

fn summary(name: &str, mut lat: Vec<Duration>, wall: Duration) {
    lat.sort();
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    println!(
        "{name:<28} {:>6} ops  {:>9.0} ops/s  p50 {:>7.3} ms  p99 {:>7.3} ms",
        lat.len(),
        lat.len() as f64 / wall.as_secs_f64(),
        q(0.5),
        q(0.99)
    );
}

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        unix_time_ms: SystemClock.now().as_unix_ms(),
        actor_party: "holder-a".into(),
        role: 2,
        rpc: "/renketsu.v1.KeyCustodian/EvaluateBatch".into(),
        project: "bench".into(),
        recipe: "r/v1".into(),
        epoch: 1,
        item_count: i,
        status_code: 0,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = tempfile::tempdir()?;
    let url = args
        .first()
        .cloned()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let n: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let store = Store::connect(&url, KekRing::generate(&mut StdRng::seed_from_u64(1))).await?;
    println!(
        "backend: {}",
        if url.starts_with("sqlite") {
            "sqlite"
        } else {
            "postgres"
        }
    );
    store
        .create_project(NewProject::generate(
            "bench",
            &["r/v1"],
            &["f"],
            SystemClock.now(),
            &mut StdRng::seed_from_u64(2),
        ))
        .await?;
    store
        .enrol_holder(HolderRecord {
            project: "bench".into(),
            party: "holder-a".into(),
            declared_records: n * 1024,
            evaluation_quota: n * 1024 * 10,
            enrolled_at: SystemClock.now(),
        })
        .await?;

    let t = Instant::now();
    let mut lat = Vec::new();
    for _ in 0..n {
        let s = Instant::now();
        store
            .reserve_evaluations("bench", "holder-a", "r/v1", 1, 1024)
            .await?;
        lat.push(s.elapsed());
    }
    summary("reserve (sequential)", lat, t.elapsed());

    let t = Instant::now();
    let mut lat = Vec::new();
    for i in 0..n {
        let s = Instant::now();
        store.append_audit(event(i)).await?;
        lat.push(s.elapsed());
    }
    summary("audit append (sequential)", lat, t.elapsed());

    let tasks = 8;
    let t = Instant::now();
    let mut handles = Vec::new();
    for k in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in 0..n / tasks {
                let s = Instant::now();
                store.append_audit(event(k * n + i)).await.unwrap();
                lat.push(s.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await?);
    }
    summary("audit append (8 tasks)", lat, t.elapsed());

    let t = Instant::now();
    let mut lat = Vec::new();
    for _ in 0..n {
        let s = Instant::now();
        let key = store.epoch_key("bench", "r/v1", 1).await?;
        let _ = key.secret_key()?;
        lat.push(s.elapsed());
    }
    summary("epoch key read+derive", lat, t.elapsed());

    let t = Instant::now();
    let verified = verify_audit(&store).await??;
    println!(
        "verify_audit: {verified} entries in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
