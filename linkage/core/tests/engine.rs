//! The engine through its public API only: two in-memory datasets linked with a schema, no
//! binary, no file system.

use renketsu_linkage::engine::{
    EngineError, HolderInput, Keys, LinkOptions, LinkPlan, Matcher, MemoryOutputs, NoObserver,
    Observer, random_pseudonyms,
};
use renketsu_linkage::ingest::{CsvSource, EncodingChoice, RejectList, RowReject};
use renketsu_linkage::{ProjectSecret, Schema};

const SCHEMA: &str = r#"
schema_format = 1
name = "engine-test"
version = 1
[input]
id_column = "id"
[fields.kana]
columns = ["last_kana", "first_kana"]
normalizer = "kana_name"
[fields.birth_date]
column = "birth_date"
normalizer = "birth_date"
[fields.sex]
column = "sex"
normalizer = "sex"
[content]
columns = ["dx"]
[[recipes]]
name = "kana_dob_sex"
version = 1
fields = ["kana", "birth_date", "sex"]
"#;

const A: &str = "id,last_kana,first_kana,birth_date,sex,dx\n\
a1,ヤマダ,タロウ,1970-01-02,1,I10\n\
a2,スズキ,ハナコ,1980-03-04,2,E11\n\
a3,タナカ,イチロウ,1990-05-06,1,J45\n\
a4,,,,,X00\n\
a2,スズキ,ハナコ,1980-03-04,2,E11\n";

// b1 = a1 written in hiragana with an era date; b2 = a2 in half-width kana; b3 nobody.
const B: &str = "id,last_kana,first_kana,birth_date,sex,dx\n\
b1,やまだ,たろう,S45.01.02,男,K29\n\
b2,ｽｽﾞｷ,ﾊﾅｺ,1980/3/4,女,N18\n\
b3,サトウ,ジロウ,2000-07-08,1,M54\n";

fn csv(text: &'static str, label: &str) -> CsvSource<'static> {
    CsvSource::new(
        Box::new(text.as_bytes()),
        label,
        text.len() as u64,
        EncodingChoice::Auto,
    )
    .unwrap()
}

#[test]
fn links_two_in_memory_datasets() {
    let schema = Schema::from_toml(SCHEMA).unwrap();
    let secret = ProjectSecret::from_bytes([42; 32]);
    let plan = LinkPlan::new(
        &schema,
        Keys::Hmac { secret: &secret },
        LinkOptions::new("p", 20261122),
    )
    .unwrap();
    assert_eq!(plan.matcher(), Matcher::Exact);
    assert!(plan.explain().contains("kana_dob_sex (direct)"));
    let (mut ra, mut rb) = (RejectList::default(), RejectList::default());
    let inputs = vec![
        HolderInput::csv("a", csv(A, "a.csv"), &mut ra),
        HolderInput::csv("b", csv(B, "b.csv"), &mut rb),
    ];
    let mut linked = plan.run(inputs, &mut NoObserver).unwrap();
    // a1–b1 and a2–b2 link; a3, b3 stay alone; a4 and the repeated a2 are rejected.
    assert_eq!(linked.clusters(), 4);
    let pids = random_pseudonyms(linked.clusters(), &mut rand::rng());
    let mut out = MemoryOutputs::default();
    let summary = linked.write(&pids, &mut out).unwrap();
    assert_eq!(summary.links, 2);
    assert_eq!(out.text("pairs.csv"), "id_a,id_b\na1,b1\na2,b2\n");
    assert_eq!(summary.parties[0].read, 5);
    assert_eq!(summary.parties[0].tokenized, 3);
    assert_eq!(summary.parties[0].rejected, 2);
    let reasons: Vec<RowReject> = ra.0.iter().map(|r| r.2).collect();
    assert_eq!(reasons, [RowReject::NoToken, RowReject::DuplicateId]);
    assert!(rb.0.is_empty());
    // The researcher's view: pid and content only, one row per cluster here.
    let joined = out.text("joined.csv");
    assert!(joined.starts_with("pid,a.dx,b.dx\n"));
    assert!(joined.lines().any(|l| l.ends_with(",I10,K29")));
    assert!(joined.lines().any(|l| l.ends_with(",J45,")));
    assert!(joined.lines().any(|l| l.ends_with(",,M54")));
    // No record id or identifier as a field (pseudonyms are random hex, so a
    // substring test could meet "a1" by chance).
    let fields: Vec<&str> = joined.lines().flat_map(|l| l.split(',')).collect();
    for id in ["a1", "a2", "a3", "b1", "b2", "b3"] {
        assert!(!fields.contains(&id), "record id {id} in the joined view");
    }
    assert!(!joined.contains("ヤマダ"));
    // clusters.csv: every tokenized record once, the linked ones under one pseudonym.
    let clusters = out.text("clusters.csv");
    let pid_of = |id: &str| {
        clusters
            .lines()
            .find(|l| l.split(',').nth(1) == Some(id))
            .map(|l| l.rsplit(',').next().unwrap().to_owned())
    };
    assert_eq!(pid_of("a1"), pid_of("b1"));
    assert_ne!(pid_of("a1"), pid_of("a3"));
    assert_eq!(pid_of("a4"), None);
    assert_eq!(clusters.lines().count(), 1 + 3 + 3);
}

#[test]
fn refuses_what_cannot_be_linked() {
    let schema = Schema::from_toml(SCHEMA).unwrap();
    let secret = ProjectSecret::from_bytes([1; 32]);
    // One holder only.
    let plan = LinkPlan::new(
        &schema,
        Keys::Hmac { secret: &secret },
        LinkOptions::new("p", 20261122),
    )
    .unwrap();
    let mut r = RejectList::default();
    let err = plan
        .run(
            vec![HolderInput::csv("a", csv(A, "a.csv"), &mut r)],
            &mut NoObserver,
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::TooFewHolders));
    // CSV inputs without the key.
    let plan = LinkPlan::new(&schema, Keys::TokenFiles, LinkOptions::new("p", 20261122)).unwrap();
    let (mut ra, mut rb) = (RejectList::default(), RejectList::default());
    let err = plan
        .run(
            vec![
                HolderInput::csv("a", csv(A, "a.csv"), &mut ra),
                HolderInput::csv("b", csv(B, "b.csv"), &mut rb),
            ],
            &mut NoObserver,
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::CsvWithoutKey));
}

#[test]
fn cancellation_stops_the_run() {
    struct Cancel;
    impl Observer for Cancel {
        fn cancelled(&self) -> bool {
            true
        }
    }
    let schema = Schema::from_toml(SCHEMA).unwrap();
    let secret = ProjectSecret::from_bytes([1; 32]);
    let plan = LinkPlan::new(
        &schema,
        Keys::Hmac { secret: &secret },
        LinkOptions::new("p", 20261122),
    )
    .unwrap();
    let (mut ra, mut rb) = (RejectList::default(), RejectList::default());
    let err = plan
        .run(
            vec![
                HolderInput::csv("a", csv(A, "a.csv"), &mut ra),
                HolderInput::csv("b", csv(B, "b.csv"), &mut rb),
            ],
            &mut Cancel,
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::Cancelled));
}
