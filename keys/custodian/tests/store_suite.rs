//! The custodian store suite: every test runs on SQLite (a temporary file) and on PostgreSQL
//! (a fresh database per test on the server named by `RENKETSU_TEST_PG_URL`, which
//! `scripts/test.sh` starts with `scripts/postgres.sh`). Without that variable the PostgreSQL
//! half prints a notice and passes, except under CI (`CI` set), where it fails.

use std::collections::HashSet;
use std::time::Duration;

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use renketsu_custodian::store::{
    CustodianStore, HolderRecord, NewProject, Rotation, Store, StoreError, verify_audit,
};
use renketsu_keys::audit::{AuditError, AuditEvent};
use renketsu_keys::lifecycle::{Clock as _, KeyState, MockClock, derive_epoch_key};
use renketsu_keys::seal::{Kek, KekRing, SealError};
use sqlx::AssertSqlSafe;
use support::{Backend, TestDb, with_database};

mod support;

/// Runs raw SQL against the store's database (to play the attacker with database access).
async fn exec(store: &Store, sql: &str) -> u64 {
    let q = AssertSqlSafe(sql.to_owned());
    match store {
        Store::Sqlite(s) => sqlx::query(q)
            .execute(s.pool())
            .await
            .unwrap()
            .rows_affected(),
        Store::Postgres(s) => sqlx::query(q)
            .execute(s.pool())
            .await
            .unwrap()
            .rows_affected(),
    }
}

async fn close(store: Store) {
    match store {
        Store::Sqlite(s) => s.close().await,
        Store::Postgres(s) => s.close().await,
    }
}

fn keks(seed: u64) -> KekRing {
    KekRing::generate(&mut StdRng::seed_from_u64(seed))
}

fn project(name: &str, clock: &MockClock, seed: u64) -> NewProject {
    NewProject::generate(
        name,
        &["id4-kana-dob-sex/v1", "insurer-dob/v1"],
        &["kana_name", "birth_date"],
        clock.now(),
        &mut StdRng::seed_from_u64(seed),
    )
}

fn holder(project: &str, party: &str, quota: u64, clock: &MockClock) -> HolderRecord {
    HolderRecord {
        project: project.into(),
        party: party.into(),
        declared_records: quota / 2,
        evaluation_quota: quota,
        enrolled_at: clock.now(),
    }
}

fn event(i: u64, clock: &MockClock) -> AuditEvent {
    AuditEvent {
        unix_time_ms: clock.now().as_unix_ms(),
        actor_party: format!("holder-{}", i % 3),
        role: 2,
        rpc: "/renketsu.v1.KeyCustodian/EvaluateBatch".into(),
        project: "p".into(),
        recipe: "id4-kana-dob-sex/v1".into(),
        epoch: 1,
        item_count: 1024,
        status_code: 0,
    }
}

fn seed32(seed: u64) -> zeroize::Zeroizing<[u8; 32]> {
    let mut s = zeroize::Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut StdRng::seed_from_u64(seed), s.as_mut());
    s
}

const R1: &str = "id4-kana-dob-sex/v1";

// ---------------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------------

async fn projects_round_trip(db: &TestDb) {
    let store = db.open(keks(1)).await;
    let clock = MockClock::default();
    let new = project("p", &clock, 10);
    let want_pk: Vec<[u8; 32]> = new
        .recipes
        .iter()
        .map(|(r, s)| {
            derive_epoch_key(s, "p", r, 1)
                .unwrap()
                .public_key()
                .to_bytes()
        })
        .collect();
    let created = store.create_project(new).await.unwrap();
    assert_eq!(created.name, "p");
    assert_eq!(created.clk_fields, ["kana_name", "birth_date"]);
    assert!(created.holders.is_empty());
    assert_eq!(created.created_at, clock.now());
    let recipes: Vec<_> = created.recipes.iter().map(|r| r.recipe.as_str()).collect();
    assert_eq!(recipes, [R1, "insurer-dob/v1"]);
    for (r, pk) in created.recipes.iter().zip(&want_pk) {
        assert_eq!(r.active, Some((1, *pk)));
        assert_eq!(r.latest_epoch, 1);
    }
    assert_ne!(want_pk[0], want_pk[1], "recipes get independent keys");
    assert_eq!(store.get_project("p").await.unwrap(), created);

    clock.advance(Duration::from_secs(1));
    store
        .create_project(NewProject::generate(
            "q",
            &["r"],
            &[],
            clock.now(),
            &mut StdRng::seed_from_u64(11),
        ))
        .await
        .unwrap();
    let names: Vec<_> = store
        .list_projects()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["p", "q"]);

    assert!(matches!(
        store.create_project(project("p", &clock, 12)).await,
        Err(StoreError::ProjectExists(n)) if n == "p"
    ));
    // The refused duplicate changed nothing.
    assert_eq!(store.get_project("p").await.unwrap(), created);
    assert!(matches!(
        store.get_project("nope").await,
        Err(StoreError::ProjectNotFound(_))
    ));
    for bad in [
        NewProject::generate("", &["r"], &[], clock.now(), &mut StdRng::seed_from_u64(1)),
        NewProject::generate("x", &[], &[], clock.now(), &mut StdRng::seed_from_u64(1)),
        NewProject::generate(
            "x",
            &["r", "r"],
            &[],
            clock.now(),
            &mut StdRng::seed_from_u64(1),
        ),
        NewProject::generate(
            "x",
            &["r"],
            &["f", "f"],
            clock.now(),
            &mut StdRng::seed_from_u64(1),
        ),
        NewProject::generate(
            "x\n",
            &["r"],
            &[],
            clock.now(),
            &mut StdRng::seed_from_u64(1),
        ),
    ] {
        assert!(
            matches!(
                store.create_project(bad).await,
                Err(StoreError::InvalidArgument(_))
            ),
            "accepted a bad project"
        );
    }
    assert!(matches!(
        store.get_project("x").await,
        Err(StoreError::ProjectNotFound(_))
    ));
}

async fn secrets_unseal_and_match(db: &TestDb) {
    let store = db.open(keks(1)).await;
    let clock = MockClock::default();
    let new = project("p", &clock, 20);
    let seed = new.recipes[0].1.clone();
    let clk = new.clk_fields[1].1.clone();
    store.create_project(new).await.unwrap();

    let key = store.epoch_key("p", R1, 1).await.unwrap();
    assert_eq!(*key.seed, *seed);
    assert_eq!(key.record.state, KeyState::Active);
    assert_eq!(
        key.secret_key().unwrap().public_key().to_bytes(),
        key.record.public_key
    );
    assert!(!format!("{key:?}").contains(&format!("{:?}", &seed[..4])));
    assert_eq!(*store.clk_key("p", "birth_date").await.unwrap(), *clk);
    assert_ne!(
        *store.clk_key("p", "kana_name").await.unwrap(),
        *clk,
        "fields get independent keys"
    );
    assert!(matches!(
        store.clk_key("p", "postcode").await,
        Err(StoreError::ClkFieldNotFound { .. })
    ));
    assert!(matches!(
        store.clk_key("nope", "kana_name").await,
        Err(StoreError::ProjectNotFound(_))
    ));
    assert!(matches!(
        store.epoch_key("p", R1, 2).await,
        Err(StoreError::EpochNotFound { epoch: 2, .. })
    ));
    assert!(matches!(
        store.epoch_key("p", "other/v1", 1).await,
        Err(StoreError::RecipeNotFound { .. })
    ));
    assert!(matches!(
        store.epoch_key("nope", R1, 1).await,
        Err(StoreError::ProjectNotFound(_))
    ));
}

async fn secrets_are_sealed_at_rest(db: &TestDb) {
    let store = db.open(keks(1)).await;
    let clock = MockClock::default();
    let new = project("p", &clock, 30);
    let seed = new.recipes[0].1.clone();
    store.create_project(new).await.unwrap();
    store.append_audit(event(1, &clock)).await.unwrap();

    // Sealed columns hold neither the seed nor the key in clear.
    let blob: Vec<u8> = match &store {
        Store::Sqlite(s) => {
            sqlx::query_scalar("SELECT seed_sealed FROM epoch_keys WHERE recipe = $1")
                .bind(R1)
                .fetch_one(s.pool())
                .await
                .unwrap()
        }
        Store::Postgres(s) => {
            sqlx::query_scalar("SELECT seed_sealed FROM epoch_keys WHERE recipe = $1")
                .bind(R1)
                .fetch_one(s.pool())
                .await
                .unwrap()
        }
    };
    assert_eq!(blob.len(), 1 + 8 + 24 + 32 + 16);
    assert!(!blob.windows(8).any(|w| w == &seed[..8]));

    // A sealed value moved to another row does not open there (AAD binds the row).
    exec(
        &store,
        "UPDATE epoch_keys SET seed_sealed = (SELECT seed_sealed FROM epoch_keys
            WHERE recipe = 'insurer-dob/v1' AND epoch = 1)
         WHERE recipe = 'id4-kana-dob-sex/v1' AND epoch = 1",
    )
    .await;
    assert!(matches!(
        store.epoch_key("p", R1, 1).await,
        Err(StoreError::Unseal {
            table: "epoch_keys",
            source: SealError::Open,
            ..
        })
    ));
    // Nor in another column or table.
    exec(
        &store,
        "UPDATE clk_keys SET key_sealed = (SELECT seed_sealed FROM epoch_keys
            WHERE recipe = 'insurer-dob/v1' AND epoch = 1) WHERE field = 'kana_name'",
    )
    .await;
    assert!(matches!(
        store.clk_key("p", "kana_name").await,
        Err(StoreError::Unseal {
            table: "clk_keys",
            ..
        })
    ));
    // A stored public key that no longer matches the sealed seed is reported.
    exec(
        &store,
        "UPDATE epoch_keys SET public_key = (SELECT public_key FROM epoch_keys
            WHERE recipe = 'id4-kana-dob-sex/v1') WHERE recipe = 'insurer-dob/v1'",
    )
    .await;
    assert!(matches!(
        store.epoch_key("p", "insurer-dob/v1", 1).await,
        Err(StoreError::Corrupt(_))
    ));
    close(store).await;

    // Another KEK (even one with the same id) opens nothing.
    let other = db.open(keks(2)).await;
    assert!(matches!(
        other.clk_key("p", "birth_date").await,
        Err(StoreError::Unseal {
            source: SealError::MissingKek(_),
            ..
        })
    ));
    assert!(matches!(
        other.audit_head().await,
        Err(StoreError::Unseal {
            table: "audit_head",
            ..
        })
    ));
    close(other).await;
}

async fn rotation_and_revocation(db: &TestDb) {
    let store = db.open(keks(1)).await;
    let clock = MockClock::default();
    store
        .create_project(project("p", &clock, 40))
        .await
        .unwrap();
    let t0 = clock.now();

    clock.advance(Duration::from_secs(60));
    let out = store
        .rotate_epoch(Rotation {
            project: "p".into(),
            recipe: R1.into(),
            seed: seed32(41),
            now: clock.now(),
            activate_at: None,
        })
        .await
        .unwrap();
    assert_eq!(out.previous_epoch, Some(1));
    assert_eq!((out.new.epoch, out.new.state), (2, KeyState::Active));
    assert_eq!(
        out.new.public_key,
        derive_epoch_key(&seed32(41), "p", R1, 2)
            .unwrap()
            .public_key()
            .to_bytes()
    );
    let e1 = store.get_epoch("p", R1, Some(1)).await.unwrap();
    assert_eq!(e1.state, KeyState::Retired);
    assert_eq!(e1.retired_at, Some(clock.now()));
    assert_eq!(e1.activates_at, Some(t0));
    assert_eq!(store.get_epoch("p", R1, None).await.unwrap(), out.new);
    // The other recipe is untouched.
    assert_eq!(
        store
            .get_epoch("p", "insurer-dob/v1", None)
            .await
            .unwrap()
            .epoch,
        1
    );
    let p = store.get_project("p").await.unwrap();
    assert_eq!(p.recipes[0].active, Some((2, out.new.public_key)));

    // Pending rotation: not active before its time.
    let at = clock.now().saturating_add(Duration::from_secs(3600));
    let pending = store
        .rotate_epoch(Rotation {
            project: "p".into(),
            recipe: R1.into(),
            seed: seed32(42),
            now: clock.now(),
            activate_at: Some(at),
        })
        .await
        .unwrap();
    assert_eq!(
        (pending.new.epoch, pending.new.state),
        (3, KeyState::Pending)
    );
    assert_eq!(store.get_epoch("p", R1, None).await.unwrap().epoch, 2);
    assert!(matches!(
        store
            .rotate_epoch(Rotation {
                project: "p".into(),
                recipe: R1.into(),
                seed: seed32(43),
                now: clock.now(),
                activate_at: None,
            })
            .await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(store.activate_due(clock.now()).await.unwrap().is_empty());
    clock.set(at);
    let activated = store.activate_due(clock.now()).await.unwrap();
    assert_eq!(activated.len(), 1);
    assert_eq!(
        (activated[0].epoch, activated[0].state),
        (3, KeyState::Active)
    );
    assert_eq!(
        store.get_epoch("p", R1, Some(2)).await.unwrap().state,
        KeyState::Retired
    );
    assert!(store.activate_due(clock.now()).await.unwrap().is_empty());
    let states: Vec<_> = store
        .list_epochs("p", R1)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.epoch, e.state))
        .collect();
    assert_eq!(
        states,
        [
            (1, KeyState::Retired),
            (2, KeyState::Retired),
            (3, KeyState::Active)
        ]
    );

    // Revocation: final, and leaves the recipe without an active key.
    let revoked = store.revoke_epoch("p", R1, 3, clock.now()).await.unwrap();
    assert_eq!(revoked.state, KeyState::Revoked);
    assert_eq!(revoked.revoked_at, Some(clock.now()));
    assert!(matches!(
        store.get_epoch("p", R1, None).await,
        Err(StoreError::NoActiveEpoch { .. })
    ));
    assert!(matches!(
        store.revoke_epoch("p", R1, 3, clock.now()).await,
        Err(StoreError::Transition { epoch: 3, source, .. })
            if source.from == KeyState::Revoked
    ));
    store.revoke_epoch("p", R1, 1, clock.now()).await.unwrap();
    assert_eq!(
        store.get_project("p").await.unwrap().recipes[0].active,
        None
    );
    // A rotation after revocation makes a fresh active epoch.
    let out = store
        .rotate_epoch(Rotation {
            project: "p".into(),
            recipe: R1.into(),
            seed: seed32(44),
            now: clock.now(),
            activate_at: None,
        })
        .await
        .unwrap();
    assert_eq!((out.previous_epoch, out.new.epoch), (None, 4));
    assert!(matches!(
        store
            .rotate_epoch(Rotation {
                project: "p".into(),
                recipe: "other/v1".into(),
                seed: seed32(45),
                now: clock.now(),
                activate_at: None,
            })
            .await,
        Err(StoreError::RecipeNotFound { .. })
    ));
    assert!(matches!(
        store.revoke_epoch("p", R1, 9, clock.now()).await,
        Err(StoreError::EpochNotFound { epoch: 9, .. })
    ));
}

async fn holders_and_quotas(db: &TestDb) {
    let store = db.open(keks(1)).await;
    let clock = MockClock::default();
    store
        .create_project(project("p", &clock, 50))
        .await
        .unwrap();
    let a = store
        .enrol_holder(holder("p", "holder-a", 100, &clock))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    store
        .enrol_holder(holder("p", "holder-b", 10, &clock))
        .await
        .unwrap();
    assert_eq!(store.get_holder("p", "holder-a").await.unwrap(), a);
    let parties: Vec<_> = store
        .get_project("p")
        .await
        .unwrap()
        .holders
        .into_iter()
        .map(|h| h.party)
        .collect();
    assert_eq!(parties, ["holder-a", "holder-b"]);
    assert!(matches!(
        store.enrol_holder(holder("p", "holder-a", 5, &clock)).await,
        Err(StoreError::HolderExists { .. })
    ));
    assert_eq!(store.get_holder("p", "holder-a").await.unwrap(), a);
    assert!(matches!(
        store
            .enrol_holder(holder("nope", "holder-a", 5, &clock))
            .await,
        Err(StoreError::ProjectNotFound(_))
    ));
    assert!(matches!(
        store.enrol_holder(holder("p", "holder-c", 0, &clock)).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.get_holder("p", "holder-c").await,
        Err(StoreError::HolderNotFound { .. })
    ));

    let r = store
        .reserve_evaluations("p", "holder-a", R1, 1, 60)
        .await
        .unwrap();
    assert_eq!((r.used, r.quota), (60, 100));
    let r = store
        .reserve_evaluations("p", "holder-a", R1, 1, 40)
        .await
        .unwrap();
    assert_eq!(r.used, 100);
    match store.reserve_evaluations("p", "holder-a", R1, 1, 1).await {
        Err(StoreError::QuotaExceeded {
            used,
            requested,
            quota,
            ..
        }) => assert_eq!((used, requested, quota), (100, 1, 100)),
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    // Counters are per (holder, recipe, epoch); a refused call reserves nothing.
    assert!(matches!(
        store.reserve_evaluations("p", "holder-b", R1, 1, 11).await,
        Err(StoreError::QuotaExceeded { used: 0, .. })
    ));
    assert_eq!(
        store
            .evaluations_used("p", "holder-b", R1, 1)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .reserve_evaluations("p", "holder-b", R1, 1, 10)
            .await
            .unwrap()
            .used,
        10
    );
    assert_eq!(
        store
            .reserve_evaluations("p", "holder-a", R1, 2, 100)
            .await
            .unwrap()
            .used,
        100
    );
    assert_eq!(
        store
            .reserve_evaluations("p", "holder-a", "insurer-dob/v1", 1, 7)
            .await
            .unwrap()
            .used,
        7
    );
    assert_eq!(
        store
            .evaluations_used("p", "holder-a", R1, 1)
            .await
            .unwrap(),
        100
    );
    assert!(matches!(
        store.reserve_evaluations("p", "holder-z", R1, 1, 1).await,
        Err(StoreError::HolderNotFound { .. })
    ));
    assert!(matches!(
        store.reserve_evaluations("q", "holder-a", R1, 1, 1).await,
        Err(StoreError::HolderNotFound { .. })
    ));
    assert!(matches!(
        store.reserve_evaluations("p", "holder-a", R1, 1, 0).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

/// Many tasks reserve concurrently against one quota: the grants never sum past it, and the
/// stored counter equals the sum of grants.
async fn concurrent_reservations_never_overspend(db: &TestDb) {
    const QUOTA: u64 = 1_000;
    const STEP: u64 = 7;
    const TASKS: usize = 48;
    let store = db.open(keks(1)).await;
    let clock = MockClock::default();
    store
        .create_project(project("p", &clock, 60))
        .await
        .unwrap();
    store
        .enrol_holder(holder("p", "holder-a", QUOTA, &clock))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut granted = 0u64;
            loop {
                match store
                    .reserve_evaluations("p", "holder-a", R1, 1, STEP)
                    .await
                {
                    Ok(r) => {
                        assert!(r.used <= QUOTA);
                        granted += STEP;
                    }
                    Err(StoreError::QuotaExceeded { used, .. }) => {
                        assert!(used + STEP > QUOTA, "refused at {used}");
                        return granted;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(
        total,
        QUOTA / STEP * STEP,
        "every possible grant made, none more"
    );
    assert_eq!(
        store
            .evaluations_used("p", "holder-a", R1, 1)
            .await
            .unwrap(),
        total
    );
}

/// Many tasks append concurrently: the log has every entry once, sequences 1..=n without gaps,
/// and the chain and sealed head verify.
async fn concurrent_audit_appends_keep_the_chain(db: &TestDb) {
    const TASKS: u64 = 32;
    const EACH: u64 = 10;
    let store = db.open(keks(1)).await;
    let clock = MockClock::default();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let clock = clock.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..EACH {
                let mut e = event(t * EACH + i, &clock);
                e.item_count = t * EACH + i;
                seqs.push(store.append_audit(e).await.unwrap().sequence);
            }
            seqs
        }));
    }
    let mut seqs = HashSet::new();
    for t in tasks {
        for s in t.await.unwrap() {
            assert!(seqs.insert(s), "sequence {s} handed out twice");
        }
    }
    assert_eq!(seqs, (1..=TASKS * EACH).collect());
    let entries = store.read_audit(0, 0).await.unwrap();
    assert_eq!(entries.len() as u64, TASKS * EACH);
    let items: HashSet<u64> = entries.iter().map(|e| e.event.item_count).collect();
    assert_eq!(
        items.len() as u64,
        TASKS * EACH,
        "every append is stored once"
    );
    assert_eq!(verify_audit(&store).await.unwrap(), Ok(TASKS * EACH));
    let head = store.audit_head().await.unwrap().unwrap();
    assert_eq!(head, entries.last().unwrap().head());
    // Range reads.
    let page = store.read_audit(5, 3).await.unwrap();
    let got: Vec<_> = page.iter().map(|e| e.sequence).collect();
    assert_eq!(got, [5, 6, 7]);
    assert_eq!(page[0], entries[4]);
}

/// Tampering with the audit table through SQL is detected, each kind precisely.
async fn audit_tampering_is_detected(db: &TestDb) {
    let store = db.open(keks(1)).await;
    let clock = MockClock::default();
    assert_eq!(verify_audit(&store).await.unwrap(), Ok(0));
    for i in 1..=8 {
        clock.advance(Duration::from_millis(5));
        store.append_audit(event(i, &clock)).await.unwrap();
    }
    assert_eq!(verify_audit(&store).await.unwrap(), Ok(8));
    let snapshot = store.read_audit(0, 0).await.unwrap();

    // 1. Edit a field of entry 4.
    exec(
        &store,
        "UPDATE audit_log SET item_count = 1 WHERE sequence = 4",
    )
    .await;
    assert_eq!(
        verify_audit(&store).await.unwrap(),
        Err(AuditError::Changed { sequence: 4 })
    );
    exec(
        &store,
        "UPDATE audit_log SET item_count = 1024 WHERE sequence = 4",
    )
    .await;
    assert_eq!(verify_audit(&store).await.unwrap(), Ok(8));

    // 2. Reorder: swap the sequence numbers of entries 4 and 5.
    for sql in [
        "UPDATE audit_log SET sequence = 1000004 WHERE sequence = 4",
        "UPDATE audit_log SET sequence = 4 WHERE sequence = 5",
        "UPDATE audit_log SET sequence = 5 WHERE sequence = 1000004",
    ] {
        exec(&store, sql).await;
    }
    assert_eq!(
        verify_audit(&store).await.unwrap(),
        Err(AuditError::Reordered {
            sequence: 4,
            follows: 5
        })
    );
    for sql in [
        "UPDATE audit_log SET sequence = 1000004 WHERE sequence = 4",
        "UPDATE audit_log SET sequence = 4 WHERE sequence = 5",
        "UPDATE audit_log SET sequence = 5 WHERE sequence = 1000004",
    ] {
        exec(&store, sql).await;
    }
    assert_eq!(store.read_audit(0, 0).await.unwrap(), snapshot);

    // 3. Delete an entry in the middle.
    assert_eq!(
        exec(&store, "DELETE FROM audit_log WHERE sequence = 3").await,
        1
    );
    assert_eq!(
        verify_audit(&store).await.unwrap(),
        Err(AuditError::Missing { first: 3, last: 3 })
    );

    // 4. Delete the last entries: the sealed head catches it.
    let fresh = with_empty_log(db).await;
    let s2 = &fresh;
    for i in 1..=5 {
        s2.append_audit(event(i, &clock)).await.unwrap();
    }
    exec(s2, "DELETE FROM audit_log WHERE sequence >= 4").await;
    assert_eq!(
        verify_audit(s2).await.unwrap(),
        Err(AuditError::Truncated { last: 3, head: 5 })
    );
    // The custodian appends after its sealed head, so the gap stays visible.
    s2.append_audit(event(6, &clock)).await.unwrap();
    assert_eq!(
        verify_audit(s2).await.unwrap(),
        Err(AuditError::Missing { first: 4, last: 5 })
    );

    // 5. Remove the sealed head as well: entries without a head are refused.
    exec(s2, "DELETE FROM audit_log WHERE sequence >= 4").await;
    exec(s2, "UPDATE audit_head SET head_sealed = NULL").await;
    assert_eq!(
        verify_audit(s2).await.unwrap(),
        Err(AuditError::BeyondHead { last: 3, head: 0 })
    );
    // 6. Delete the head row: reading and appending both fail closed.
    exec(s2, "DELETE FROM audit_head").await;
    assert!(matches!(s2.audit_head().await, Err(StoreError::Corrupt(_))));
    assert!(matches!(
        s2.append_audit(event(7, &clock)).await,
        Err(StoreError::Corrupt(_))
    ));
}

/// A second store on the same database, with the audit log emptied.
async fn with_empty_log(db: &TestDb) -> Store {
    let store = db.open(keks(1)).await;
    exec(&store, "DELETE FROM audit_log").await;
    exec(&store, "UPDATE audit_head SET head_sealed = NULL").await;
    store
}

/// Keys, holders, usage and audit written through one store instance survive closing it and
/// opening the same database again.
async fn everything_survives_a_restart(db: &TestDb) {
    let clock = MockClock::default();
    let store = db.open(keks(1)).await;
    let created = store
        .create_project(project("p", &clock, 70))
        .await
        .unwrap();
    store
        .enrol_holder(holder("p", "holder-a", 500, &clock))
        .await
        .unwrap();
    store
        .rotate_epoch(Rotation {
            project: "p".into(),
            recipe: R1.into(),
            seed: seed32(71),
            now: clock.now(),
            activate_at: None,
        })
        .await
        .unwrap();
    store
        .reserve_evaluations("p", "holder-a", R1, 2, 123)
        .await
        .unwrap();
    for i in 0..20 {
        store.append_audit(event(i, &clock)).await.unwrap();
    }
    let project_before = store.get_project("p").await.unwrap();
    let seed_before = store.epoch_key("p", R1, 2).await.unwrap().seed;
    let clk_before = store.clk_key("p", "kana_name").await.unwrap();
    let log_before = store.read_audit(0, 0).await.unwrap();
    close(store).await;

    let store = db.open(keks(1)).await;
    assert_eq!(store.get_project("p").await.unwrap(), project_before);
    assert_eq!(project_before.created_at, created.created_at);
    assert_eq!(
        *store.epoch_key("p", R1, 2).await.unwrap().seed,
        *seed_before
    );
    assert_eq!(*store.clk_key("p", "kana_name").await.unwrap(), *clk_before);
    assert_eq!(
        store.get_epoch("p", R1, Some(1)).await.unwrap().state,
        KeyState::Retired
    );
    assert_eq!(
        store
            .evaluations_used("p", "holder-a", R1, 2)
            .await
            .unwrap(),
        123
    );
    assert_eq!(store.read_audit(0, 0).await.unwrap(), log_before);
    assert_eq!(verify_audit(&store).await.unwrap(), Ok(20));
    // The chain continues where it stopped.
    let next = store.append_audit(event(99, &clock)).await.unwrap();
    assert_eq!(next.sequence, 21);
    assert_eq!(next.prev_hash, log_before.last().unwrap().entry_hash);
    assert_eq!(verify_audit(&store).await.unwrap(), Ok(21));
    close(store).await;
}

/// KEK rotation: prepend a new KEK, everything still opens; re-seal; then the old KEK can go.
async fn kek_rotation_and_reseal(db: &TestDb) {
    let clock = MockClock::default();
    let old = keks(1);
    let old_line = old.lines();
    let store = db.open(old).await;
    store
        .create_project(project("p", &clock, 80))
        .await
        .unwrap();
    store.append_audit(event(1, &clock)).await.unwrap();
    let clk = store.clk_key("p", "kana_name").await.unwrap();
    close(store).await;

    let mut ring = KekRing::parse(&old_line).unwrap();
    ring.prepend(Kek::generate(&mut StdRng::seed_from_u64(2)))
        .unwrap();
    let new_only = KekRing::parse(ring.lines().lines().next().unwrap()).unwrap();
    let store = db.open(ring).await;
    assert_eq!(*store.clk_key("p", "kana_name").await.unwrap(), *clk);
    // New values are sealed with the new KEK; the old KEK alone cannot open them.
    store.append_audit(event(2, &clock)).await.unwrap();
    let report = store.reseal_all().await.unwrap();
    // 2 recipe seeds + 2 CLK keys examined and re-sealed; the head was already re-sealed by
    // the append.
    assert_eq!((report.examined, report.resealed), (5, 4));
    assert_eq!(store.reseal_all().await.unwrap().resealed, 0, "idempotent");
    close(store).await;

    let store = db.open(new_only).await;
    assert_eq!(*store.clk_key("p", "kana_name").await.unwrap(), *clk);
    store.epoch_key("p", R1, 1).await.unwrap();
    assert_eq!(verify_audit(&store).await.unwrap(), Ok(2));
    close(store).await;
    let store = db.open(KekRing::parse(&old_line).unwrap()).await;
    assert!(matches!(
        store.clk_key("p", "kana_name").await,
        Err(StoreError::Unseal {
            source: SealError::MissingKek(_),
            ..
        })
    ));
    close(store).await;
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = super::TestDb::new(super::Backend::Sqlite, stringify!($name))
                        .await
                        .unwrap();
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(db) =
                        super::TestDb::new(super::Backend::Postgres, stringify!($name)).await
                    else {
                        return;
                    };
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

suite!(
    projects_round_trip,
    secrets_unseal_and_match,
    secrets_are_sealed_at_rest,
    rotation_and_revocation,
    holders_and_quotas,
    concurrent_reservations_never_overspend,
    concurrent_audit_appends_keep_the_chain,
    audit_tampering_is_detected,
    everything_survives_a_restart,
    kek_rotation_and_reseal,
);

#[tokio::test]
async fn sqlite_in_memory_and_unsupported_urls() {
    let store = Store::connect("sqlite::memory:", keks(1)).await.unwrap();
    let clock = MockClock::default();
    store
        .create_project(project("p", &clock, 90))
        .await
        .unwrap();
    store.append_audit(event(1, &clock)).await.unwrap();
    assert_eq!(store.get_project("p").await.unwrap().recipes.len(), 2);
    assert_eq!(verify_audit(&store).await.unwrap(), Ok(1));
    assert!(matches!(
        Store::connect("mysql://localhost/x", keks(1)).await,
        Err(StoreError::UnsupportedUrl(_))
    ));
}

/// Every migration exists for both backends under the same name (janus-style check).
#[test]
fn migrations_match_across_backends() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let names = |b: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join(b))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let sqlite = names("sqlite");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, names("postgres"));
    for n in &sqlite {
        let (version, rest) = n.split_once('_').unwrap();
        assert!(
            version.len() == 14 && version.bytes().all(|b| b.is_ascii_digit()),
            "{n}"
        );
        assert!(rest.ends_with(".sql"), "{n}");
    }
}

#[test]
fn database_urls_are_rewritten() {
    assert_eq!(
        with_database("postgres://u@h:1/base", "t"),
        "postgres://u@h:1/t"
    );
    assert_eq!(
        with_database("postgres://u@h:1/base?sslmode=disable", "t"),
        "postgres://u@h:1/t?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h:1", "t"), "postgres://u@h:1/t");
}
