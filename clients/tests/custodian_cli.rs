//! The custodian as users run it: `renketsu pki dev-init`, `custodian init-config`,
//! `custodian serve` as a child process on a SQLite file, admin commands, `audit verify`.
//!
//! - kill -9 mid-batch, restart: keys unchanged (same public keys, same tokens), the audit
//!   chain verifies and every completed call is in it;
//! - audit tampering in the database (edit, delete, reorder a row, delete the last rows) makes
//!   `renketsu audit verify` fail naming the entry.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use renketsu_keys::oprf::{Blind, EvaluatedElement, Proof, PublicKey, VoprfClient};
use renketsu_protocol::v1;
use renketsu_protocol::v1::key_custodian_client::KeyCustodianClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const BIN: &str = env!("CARGO_BIN_EXE_renketsu");

/// A `renketsu custodian serve` child, killed (SIGKILL) on drop if still running.
struct Serve {
    child: Child,
    port: u16,
}

impl Serve {
    fn start(dir: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["custodian", "serve", "--config", "custodian.toml"])
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .env_remove("RENKETSU_KEK")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("renketsu custodian: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no chance to flush or clean up.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for the graceful exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "custodian exited with {status}");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RENKETSU_KEK")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "renketsu {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn as_party(url: &str, party: &str) -> Vec<String> {
    vec![
        "--custodian".into(),
        url.into(),
        "--ca".into(),
        "pki/ca.pem".into(),
        "--cert".into(),
        format!("pki/{party}.pem"),
        "--key".into(),
        format!("pki/{party}.key"),
    ]
}

fn with(args: &[&str], conn: &[String]) -> Vec<String> {
    args.iter()
        .map(|s| (*s).to_owned())
        .chain(conn.iter().cloned())
        .collect()
}

fn ok_v(dir: &Path, args: &[String]) -> String {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(dir, &refs)
}

/// A custodian directory: dev PKI, config (port 0), KEK; a project "demo" with holder-a.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    ok(&dir, &["pki", "dev-init", "--out", "pki"]);
    ok(
        &dir,
        &[
            "custodian",
            "init-config",
            "--pki",
            "pki",
            "--out",
            "custodian.toml",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    (tmp, dir)
}

fn create_demo(dir: &Path, url: &str) {
    let admin = as_party(url, "admin");
    ok_v(
        dir,
        &with(
            &[
                "keys",
                "create-project",
                "--project",
                "demo",
                "--recipe",
                "r1/v1",
                "--clk-field",
                "kana",
                "--linkage-unit",
                "linkage-unit",
            ],
            &admin,
        ),
    );
    ok_v(
        dir,
        &with(
            &[
                "keys",
                "enrol",
                "--project",
                "demo",
                "--party",
                "holder-a",
                "--declared-records",
                "100000",
            ],
            &admin,
        ),
    );
}

fn client(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    url: &str,
    party: &str,
) -> KeyCustodianClient<Channel> {
    let _guard = rt.enter();
    let read = |f: &str| std::fs::read(dir.join("pki").join(f)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .identity(Identity::from_pem(
            read(&format!("{party}.pem")),
            read(&format!("{party}.key")),
        ));
    let endpoint = Endpoint::from_shared(url.to_owned())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .timeout(Duration::from_secs(120));
    KeyCustodianClient::new(endpoint.connect_lazy())
}

/// Fixed inputs and blinds, so that two runs produce comparable unblinded tokens.
fn fixed_batch(
    pk: PublicKey,
    n: usize,
    salt: u8,
) -> (VoprfClient, Vec<renketsu_keys::oprf::BlindResult>) {
    let client = VoprfClient::new(pk);
    let blinds = (0..n)
        .map(|i| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            b[8] = salt;
            client
                .blind_with(
                    format!("person-{i}").as_bytes(),
                    Blind::from_bytes(&b).unwrap(),
                )
                .unwrap()
        })
        .collect();
    (client, blinds)
}

async fn public_key(holder: &mut KeyCustodianClient<Channel>) -> (u64, PublicKey) {
    let r = holder
        .get_public_key(v1::GetPublicKeyRequest {
            project: "demo".into(),
            recipe: "r1/v1".into(),
            epoch: None,
        })
        .await
        .unwrap()
        .into_inner();
    (r.epoch, PublicKey::from_bytes(&r.public_key).unwrap())
}

/// Evaluates a fixed batch and returns the unblinded tokens (proof checked).
async fn evaluate(
    holder: &mut KeyCustodianClient<Channel>,
    epoch: u64,
    pk: PublicKey,
    n: usize,
    salt: u8,
) -> Result<Vec<[u8; 32]>, tonic::Status> {
    let (client, blinds) = fixed_batch(pk, n, salt);
    let r = holder
        .evaluate_batch(v1::EvaluateBatchRequest {
            project: "demo".into(),
            recipe: "r1/v1".into(),
            epoch,
            blinded_elements: blinds
                .iter()
                .map(|b| b.blinded_element.to_bytes().to_vec())
                .collect(),
            mode: v1::EvaluationMode::Voprf as i32,
        })
        .await?
        .into_inner();
    let evaluated: Vec<EvaluatedElement> = r
        .evaluated_elements
        .iter()
        .map(|e| EvaluatedElement::from_bytes(e).unwrap())
        .collect();
    let proof = Proof::from_bytes(r.proof.as_deref().unwrap()).unwrap();
    Ok(client
        .finalize_element_batch(&blinds, &evaluated, &proof)
        .unwrap())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Counts OK EvaluateBatch entries in the audit log, read through `audit verify --show`.
fn verify_and_count_evaluations(dir: &Path, url: &str) -> usize {
    let out = ok_v(
        dir,
        &with(&["audit", "verify", "--show"], &as_party(url, "auditor")),
    );
    assert!(out.contains("audit log verified"), "{out}");
    out.lines()
        .filter(|l| l.contains(" EvaluateBatch ") && l.trim_end().ends_with("status 0"))
        .count()
}

#[test]
fn kill_minus_9_mid_batch_then_restart_loses_nothing() {
    let (_tmp, dir) = setup();
    let serve = Serve::start(&dir);
    let url = serve.url();
    create_demo(&dir, &url);
    let rt = runtime();
    let mut holder = client(&rt, &dir, &url, "holder-a");
    let (epoch, pk) = rt.block_on(public_key(&mut holder));
    let before = rt
        .block_on(evaluate(&mut holder, epoch, pk, 16, 0))
        .unwrap();
    let mut completed = 1;
    for _ in 0..2 {
        rt.block_on(evaluate(&mut holder, epoch, pk, 1024, 1))
            .unwrap();
        completed += 1;
    }
    // A batch in flight when the custodian dies.
    let mut in_flight_client = holder.clone();
    let in_flight =
        rt.spawn(async move { evaluate(&mut in_flight_client, epoch, pk, 4096, 2).await });
    std::thread::sleep(Duration::from_millis(30));
    serve.kill9();
    let result = rt.block_on(in_flight).unwrap();
    eprintln!(
        "in-flight batch when killed: {}",
        match &result {
            Ok(_) => "completed before the kill".to_owned(),
            Err(s) => format!("failed ({:?})", s.code()),
        }
    );
    if result.is_ok() {
        // The batch won the race; it still counts as completed.
        completed += 1;
    }

    let serve = Serve::start(&dir);
    let url = serve.url();
    let mut holder = client(&rt, &dir, &url, "holder-a");
    let (epoch2, pk2) = rt.block_on(public_key(&mut holder));
    assert_eq!((epoch2, pk2), (epoch, pk), "the key survived the crash");
    let after = rt
        .block_on(evaluate(&mut holder, epoch, pk, 16, 0))
        .unwrap();
    assert_eq!(after, before, "same tokens before and after the crash");
    completed += 1;

    let evaluations = verify_and_count_evaluations(&dir, &url);
    // Every completed call is audited; the killed batch may have been audited too if the
    // custodian died between the audit append and the response.
    assert!(
        evaluations == completed || evaluations == completed + 1,
        "{evaluations} OK EvaluateBatch entries for {completed} completed calls"
    );
    let listing = ok_v(&dir, &with(&["keys", "list"], &as_party(&url, "admin")));
    assert!(
        listing.contains("holder holder-a  declared 100000"),
        "{listing}"
    );
    serve.stop();
}

/// Stops the custodian, applies `sql` to its SQLite file, restarts it and runs
/// `audit verify`; returns its exit status and stderr.
fn tamper(dir: &Path, sql: &[&str]) -> (bool, String) {
    let rt = runtime();
    rt.block_on(async {
        use sqlx::ConnectOptions as _;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.join("custodian.db"))
            .connect()
            .await
            .unwrap();
        for s in sql {
            sqlx::query(sqlx::AssertSqlSafe(*s))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        sqlx::Connection::close(conn).await.unwrap();
    });
    let serve = Serve::start(dir);
    let out = run(
        dir,
        &with(&["audit", "verify"], &as_party(&serve.url(), "auditor"))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    serve.stop();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A custodian directory with a few audited calls, stopped; returns (dir guard, dir).
fn audited_custodian() -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir) = setup();
    let serve = Serve::start(&dir);
    let url = serve.url();
    create_demo(&dir, &url);
    let rt = runtime();
    let mut holder = client(&rt, &dir, &url, "holder-a");
    let (epoch, pk) = rt.block_on(public_key(&mut holder));
    for salt in 0..3 {
        rt.block_on(evaluate(&mut holder, epoch, pk, 4, salt))
            .unwrap();
    }
    // Entries: 1 CreateProject, 2 EnrolHolder, 3 GetPublicKey, 4-6 EvaluateBatch, then the
    // verification's own GetAuditHead (7) and ReadAuditLog (8).
    assert_eq!(verify_and_count_evaluations(&dir, &url), 3);
    serve.stop();
    (tmp, dir)
}

fn copy_dir(from: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().to_owned();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    // pki/ paths in custodian.toml are absolute; the CLI's --ca/--cert/--key are relative.
    std::os::unix::fs::symlink(from.join("pki"), to.join("pki")).unwrap();
    (tmp, to)
}

#[test]
fn audit_verify_detects_edited_deleted_reordered_and_truncated_rows() {
    let (_tmp, dir) = audited_custodian();
    let cases: [(&str, &[&str], &str); 5] = [
        ("untouched", &[], ""),
        (
            "edit",
            &["UPDATE audit_log SET item_count = item_count + 1 WHERE sequence = 5"],
            "audit entry 5 was changed",
        ),
        (
            "delete",
            &["DELETE FROM audit_log WHERE sequence = 4"],
            "audit entries 4..=4 are missing",
        ),
        (
            "reorder",
            &[
                "UPDATE audit_log SET sequence = 1000005 WHERE sequence = 5",
                "UPDATE audit_log SET sequence = 5 WHERE sequence = 6",
                "UPDATE audit_log SET sequence = 6 WHERE sequence = 1000005",
            ],
            "reordered: the entry at 5 belongs after entry 6",
        ),
        (
            "delete last rows",
            &["DELETE FROM audit_log WHERE sequence >= 7"],
            "truncated: it ends at entry 6 but the sealed head is entry 8",
        ),
    ];
    for (name, sql, expected) in cases {
        let (_guard, copy) = copy_dir(&dir);
        let (success, stderr) = tamper(&copy, sql);
        if expected.is_empty() {
            assert!(success, "{name}: {stderr}");
        } else {
            assert!(!success, "{name}: audit verify passed on a tampered log");
            assert!(
                stderr.contains("audit log does NOT verify") && stderr.contains(expected),
                "{name}: expected {expected:?} in:\n{stderr}"
            );
        }
    }
}
