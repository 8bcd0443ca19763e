//! Scored linkage of token files (SPEC.md §5.5 version 2, §9): holders encode their comparison
//! features (tokens of every recipe, per-comparison CLKs) and the linkage unit scores them
//! without a key. Made with the embedded keys, the token files give exactly the pairs and the
//! model of a run on the CSVs.

use std::io::BufRead;

use renketsu_linkage::cluster::ScoredClusterStats;
use renketsu_linkage::engine::{
    EngineError, HolderInput, Keys, LinkOptions, LinkPlan, Matcher, MemoryOutputs, NoObserver,
    Summary, random_pseudonyms,
};
use renketsu_linkage::ingest::{
    self, Accepted, CsvSource, EncodingChoice, ReadOptions, RejectList,
};
use renketsu_linkage::normalize::NormalizeContext;
use renketsu_linkage::score::aggregate;
use renketsu_linkage::score::{
    CandidateStats, CandidateTotals, ClusterJob, Compared, ComparisonEncoder, Features, InProcess,
    PairGroup, PairSet, PairStage, ScoreError, TotalsContext, WeightTerms,
};
use renketsu_linkage::token::Token;
use renketsu_linkage::token_file::{
    self, Counts, DiceRef, FORMAT, Header, MODE_HMAC, RecipeRef, SchemaRef,
};
use renketsu_linkage::{ProjectSecret, Schema, Tokenizer};

const SCHEMA: &str = include_str!("../../../schemas/jp-person.toml");
const TODAY: u32 = 20261122;

const FAMILY: [(&str, &str); 12] = [
    ("佐藤", "サトウ"),
    ("鈴木", "スズキ"),
    ("高橋", "タカハシ"),
    ("田中", "タナカ"),
    ("伊藤", "イトウ"),
    ("渡辺", "ワタナベ"),
    ("山本", "ヤマモト"),
    ("中村", "ナカムラ"),
    ("小林", "コバヤシ"),
    ("加藤", "カトウ"),
    ("吉田", "ヨシダ"),
    ("山田", "ヤマダ"),
];
const GIVEN: [(&str, &str, &str); 10] = [
    ("太郎", "タロウ", "M"),
    ("花子", "ハナコ", "F"),
    ("一郎", "イチロウ", "M"),
    ("美咲", "ミサキ", "F"),
    ("健太", "ケンタ", "M"),
    ("陽子", "ヨウコ", "F"),
    ("大輔", "ダイスケ", "M"),
    ("由美", "ユミ", "F"),
    ("翔太", "ショウタ", "M"),
    ("恵子", "ケイコ", "F"),
];

struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Two holders: `a` has 400 people, `b` 300 of them (with a kana typo, a changed postcode or
/// a missing kanji name now and then) and 150 others. Returns the CSVs and the true pairs.
fn data() -> (String, String, Vec<(String, String)>) {
    let mut rng = Lcg(2026);
    let header = "id,last_name,first_name,last_name_kana,first_name_kana,sex,birth_date,postcode\n";
    let person = |rng: &mut Lcg| {
        let f = FAMILY[rng.next(12) as usize];
        let g = GIVEN[rng.next(10) as usize];
        let date = format!(
            "{}-{:02}-{:02}",
            1930 + rng.next(80),
            1 + rng.next(12),
            1 + rng.next(28)
        );
        let post = format!("{:03}-{:04}", 100 + rng.next(5), rng.next(30));
        (f, g, date, post)
    };
    let (mut a, mut b) = (header.to_owned(), header.to_owned());
    let mut truth = Vec::new();
    for i in 0..400 {
        let (f, g, date, post) = person(&mut rng);
        a.push_str(&format!(
            "a{i},{},{},{},{},{},{date},{post}\n",
            f.0, g.0, f.1, g.1, g.2
        ));
        if i < 300 {
            let mut kana_given = g.1.to_owned();
            let mut kanji = (f.0, g.0);
            let mut post = post.clone();
            match rng.next(6) {
                0 => kana_given.push('ー'),
                1 => post = format!("{:03}-{:04}", 100 + rng.next(5), rng.next(30)),
                2 => kanji = ("", ""),
                _ => {}
            }
            b.push_str(&format!(
                "b{i},{},{},{},{kana_given},{},{},{post}\n",
                kanji.0,
                kanji.1,
                f.1,
                g.2,
                date.replace('-', "")
            ));
            truth.push((format!("a{i}"), format!("b{i}")));
        }
    }
    for i in 300..450 {
        let (f, g, date, post) = person(&mut rng);
        b.push_str(&format!(
            "b{i},{},{},{},{},{},{date},{post}\n",
            f.0, g.0, f.1, g.1, g.2
        ));
    }
    (a, b, truth)
}

fn csv(text: &str, label: &str) -> CsvSource<'static> {
    let bytes: Vec<u8> = text.as_bytes().to_vec();
    let len = bytes.len() as u64;
    CsvSource::new(
        Box::new(std::io::Cursor::new(bytes)),
        label,
        len,
        EncodingChoice::Auto,
    )
    .unwrap()
}

/// What `renketsu tokenize` writes in embedded mode, made with the core's API: tokens of
/// every recipe and, with `features`, the per-comparison CLKs (version 2).
fn token_file(
    schema: &Schema,
    secret: &ProjectSecret,
    party: &str,
    text: &str,
    features: bool,
) -> Vec<u8> {
    let tokenizer = Tokenizer::new(schema, secret, "p", NormalizeContext { today: TODAY });
    let mut encoder = ComparisonEncoder::new(schema, secret, "p");
    let dice = if features {
        DiceRef::of_schema(schema)
    } else {
        Vec::new()
    };
    let header = Header {
        format: FORMAT.to_owned(),
        version: token_file::version_for(&dice),
        project: "p".to_owned(),
        party: party.to_owned(),
        schema: SchemaRef {
            name: schema.name.clone(),
            version: schema.version,
            digest: "00".repeat(32),
        },
        mode: MODE_HMAC.to_owned(),
        oprf_mode: None,
        recipes: RecipeRef::hmac_refs(schema),
        clk_bits: None,
        today: "2026-11-22".to_owned(),
        created_by: "test".to_owned(),
        dice,
    };
    let mut out = Vec::new();
    token_file::encode_header(&mut out, &header);
    let mut rejects = RejectList::default();
    let mut n = 0u64;
    let read = ingest::read_holder(
        &ReadOptions {
            schema,
            tokenizer: &tokenizer,
            id_column: "id",
        },
        csv(text, party),
        &mut rejects,
        &mut |_| {},
        &mut |acc: Accepted<'_>| -> Result<(), EngineError> {
            let filters = if features {
                encoder.encode(acc.tokens)
            } else {
                Vec::new()
            };
            let filters: Vec<(usize, u32, &[u64])> = filters
                .iter()
                .map(|(i, m, w)| (*i, *m, w.as_slice()))
                .collect();
            token_file::encode_record_features(
                &mut out,
                &acc.id,
                acc.tokens.tokens.iter().map(|(r, t)| (*r, t)),
                None,
                &filters,
            );
            n += 1;
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(read.stats.tokenized, n);
    let rejected = read.stats.rejects.values().sum::<u64>();
    token_file::encode_trailer(
        &mut out,
        &Counts {
            records: n,
            read: n + rejected,
            tokenized: n,
            rejected,
            rejects_by_reason: read
                .stats
                .rejects
                .iter()
                .map(|(k, v)| (k.code().to_owned(), *v))
                .collect(),
            encoding: "utf-8".to_owned(),
            ..Counts::default()
        },
    );
    out
}

/// The two holders of [`data`] as token files with comparison features (one key).
fn ab_token_files(schema: &Schema) -> Vec<Vec<u8>> {
    let secret = ProjectSecret::from_bytes([5; 32]);
    let (a, b, _) = data();
    vec![
        token_file(schema, &secret, "a", &a, true),
        token_file(schema, &secret, "b", &b, true),
    ]
}

/// Fresh inputs over [`ab_token_files`].
fn ab_inputs(files: &[Vec<u8>]) -> Vec<HolderInput<'static>> {
    vec![
        tokens_input("a", files[0].clone()),
        tokens_input("b", files[1].clone()),
    ]
}

fn tokens_input(name: &str, bytes: Vec<u8>) -> HolderInput<'static> {
    let reader: Box<dyn BufRead + Send> = Box::new(std::io::Cursor::new(bytes));
    HolderInput::tokens(
        name,
        token_file::Reader::new(reader, name).unwrap(),
        &format!("{name}.tokens"),
    )
}

fn write(plan: &LinkPlan<'_>, inputs: Vec<HolderInput<'_>>) -> (MemoryOutputs, Summary) {
    let mut linked = plan.run(inputs, &mut NoObserver).unwrap();
    let pids = random_pseudonyms(linked.clusters(), &mut rand::rng());
    let mut out = MemoryOutputs::default();
    let summary = linked.write(&pids, &mut out).unwrap();
    (out, summary)
}

#[test]
fn scored_token_files_link_as_the_csvs() {
    let schema = Schema::from_toml(SCHEMA).unwrap();
    let secret = ProjectSecret::from_bytes([5; 32]);
    let (a, b, truth) = data();

    let embedded = LinkPlan::new(
        &schema,
        Keys::Hmac { secret: &secret },
        LinkOptions::new("p", TODAY),
    )
    .unwrap();
    assert_eq!(embedded.matcher(), Matcher::Scored);
    let (mut ra, mut rb) = (RejectList::default(), RejectList::default());
    let (csv_out, csv_summary) = write(
        &embedded,
        vec![
            HolderInput::csv("a", csv(&a, "a.csv"), &mut ra),
            HolderInput::csv("b", csv(&b, "b.csv"), &mut rb),
        ],
    );

    let plan = LinkPlan::new(&schema, Keys::TokenFiles, LinkOptions::new("p", TODAY)).unwrap();
    assert_eq!(plan.matcher(), Matcher::Scored);
    let (tok_out, tok_summary) = write(
        &plan,
        vec![
            tokens_input("a", token_file(&schema, &secret, "a", &a, true)),
            tokens_input("b", token_file(&schema, &secret, "b", &b, true)),
        ],
    );

    // The same pairs, the same model, the same estimates.
    let pairs = csv_out.text("pairs.csv");
    assert_eq!(pairs, tok_out.text("pairs.csv"));
    assert_eq!(
        csv_out.text("pair_scores.csv"),
        tok_out.text("pair_scores.csv")
    );
    let (cs, ts) = (
        csv_summary.scoring.as_ref().unwrap(),
        tok_summary.scoring.as_ref().unwrap(),
    );
    assert_eq!(cs.prior, ts.prior);
    assert_eq!(cs.candidates.pairs, ts.candidates.pairs);
    assert_eq!(cs.estimated.precision, ts.estimated.precision);
    assert_eq!(cs.estimated.recall, ts.estimated.recall);
    assert_eq!(ts.estimated.by_holder_pair.len(), 1);
    // Token files carry no content: no joined view.
    assert!(csv_out.get("joined.csv").is_some());
    assert!(tok_out.get("joined.csv").is_none());

    // The scoring is real: most true pairs are found, and the Dice levels matter (kana
    // typos and missing kanji names are linked too).
    let found: Vec<(String, String)> = pairs
        .lines()
        .skip(1)
        .map(|l| {
            let (x, y) = l.split_once(',').unwrap();
            (x.to_owned(), y.to_owned())
        })
        .collect();
    let tp = found.iter().filter(|p| truth.contains(p)).count();
    assert!(tp * 10 >= truth.len() * 9, "{tp} of {}", truth.len());
    assert!(
        tp * 100 >= found.len() * 95,
        "{tp} of {} links",
        found.len()
    );
}

#[test]
fn scored_linking_refuses_token_files_without_the_features() {
    let schema = Schema::from_toml(SCHEMA).unwrap();
    let secret = ProjectSecret::from_bytes([5; 32]);
    let (a, b, _) = data();
    let plan = LinkPlan::new(&schema, Keys::TokenFiles, LinkOptions::new("p", TODAY)).unwrap();
    let v1 = token_file(&schema, &secret, "b", &b, false);
    assert!(v1.starts_with(br#"{"format":"renketsu-tokens","version":1,"#));
    let err = plan
        .run(
            vec![
                tokens_input("a", token_file(&schema, &secret, "a", &a, true)),
                tokens_input("b", v1),
            ],
            &mut NoObserver,
        )
        .unwrap_err();
    assert!(
        matches!(err, EngineError::ScoringNeedsFeatures(..)),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.starts_with("b.tokens:"), "{msg}");
    assert!(msg.contains("carries none"), "{msg}");
}

/// A pair stage made the way a distributed one works (renketsu.spark): comparisons by
/// features loaded on their own from the token files (as each worker loads them), clusters
/// by connected component; `short` drops one comparison vector.
struct ByParts {
    files: Vec<Vec<u8>>,
    schema: Schema,
    short: bool,
    calls: Vec<&'static str>,
    components_links: u64,
}

/// The comparison features of token files, loaded on their own (as a worker loads them).
fn worker_features(schema: &Schema, files: &[Vec<u8>]) -> Features {
    let readers = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let r: Box<dyn BufRead + Send> = Box::new(std::io::Cursor::new(f.clone()));
            (
                token_file::Reader::new(r, "worker").unwrap(),
                format!("{i}"),
            )
        })
        .collect();
    renketsu_linkage::engine::token_features(schema, readers).unwrap()
}

impl PairStage for ByParts {
    fn candidates(
        &mut self,
        set: PairSet,
        keys: &mut [(Token, u32)],
        offsets: &[u32],
        max_block: usize,
        max_block_pairs: u64,
    ) -> Result<(Vec<(u32, u32)>, CandidateStats), ScoreError> {
        self.calls.push("candidates");
        InProcess.candidates(set, keys, offsets, max_block, max_block_pairs)
    }

    fn compare(
        &mut self,
        _engine: &Features,
        pairs: &[(u32, u32)],
    ) -> Result<Vec<Compared>, ScoreError> {
        self.calls.push("compare");
        let worker = worker_features(&self.schema, &self.files);
        let mut out = worker.compare_all(pairs);
        if self.short {
            out.pop();
        }
        Ok(out)
    }

    fn cluster(
        &mut self,
        job: ClusterJob<'_>,
    ) -> Result<(Vec<u32>, usize, ScoredClusterStats), ScoreError> {
        self.calls.push("cluster");
        self.components_links = job.links.len() as u64;
        Ok(job.run_by_component())
    }
}

/// A run whose candidates, comparisons and clusters are made by parts (features loaded
/// apart, clusters per connected component) equals the in-process run record for record;
/// a stage that loses a comparison vector fails the run instead of skewing it.
#[test]
fn a_stage_by_parts_links_as_the_engine() {
    let schema = Schema::from_toml(SCHEMA).unwrap();
    let files = ab_token_files(&schema);
    let inputs = || ab_inputs(&files);
    let plan = LinkPlan::new(&schema, Keys::TokenFiles, LinkOptions::new("p", TODAY)).unwrap();
    let mut engine = plan.run(inputs(), &mut NoObserver).unwrap();
    let mut stage = ByParts {
        files: files.clone(),
        schema: schema.clone(),
        short: false,
        calls: Vec::new(),
        components_links: 0,
    };
    let mut parts = plan
        .run_with(inputs(), &mut NoObserver, &mut stage)
        .unwrap();
    assert_eq!(stage.calls, ["candidates", "compare", "cluster"]);
    assert!(stage.components_links > 100, "{}", stage.components_links);
    assert_eq!(engine.labels(), parts.labels());
    assert_eq!(engine.clusters(), parts.clusters());
    let write = |l: &mut renketsu_linkage::engine::Linked<'_>| {
        let pids = random_pseudonyms(l.clusters(), &mut rand::rng());
        let mut out = MemoryOutputs::default();
        let summary = l.write(&pids, &mut out).unwrap();
        (out, summary)
    };
    let ((eo, es), (po, ps)) = (write(&mut engine), write(&mut parts));
    assert_eq!(eo.text("pairs.csv"), po.text("pairs.csv"));
    assert_eq!(eo.text("pair_scores.csv"), po.text("pair_scores.csv"));
    let (es, ps) = (es.scoring.unwrap(), ps.scoring.unwrap());
    assert_eq!(
        format!("{:?}", es.clustering),
        format!("{:?}", ps.clustering)
    );
    assert_eq!(es.estimated.precision, ps.estimated.precision);

    stage.short = true;
    let err = plan
        .run_with(inputs(), &mut NoObserver, &mut stage)
        .unwrap_err();
    assert!(err.to_string().contains("comparison vectors"), "{err}");

    // Trained on a record sample (150 records per holder): the sample's candidates and
    // comparisons go through the stage too, and the result is still the engine's.
    let mut small = schema.clone();
    small.scoring.as_mut().unwrap().train_records = 150;
    let plan = LinkPlan::new(&small, Keys::TokenFiles, LinkOptions::new("p", TODAY)).unwrap();
    let engine = plan.run(inputs(), &mut NoObserver).unwrap();
    let mut stage = ByParts {
        files: files.clone(),
        schema: small.clone(),
        short: false,
        calls: Vec::new(),
        components_links: 0,
    };
    let parts = plan
        .run_with(inputs(), &mut NoObserver, &mut stage)
        .unwrap();
    assert_eq!(
        stage.calls,
        ["candidates", "candidates", "compare", "compare", "cluster"]
    );
    assert_eq!(engine.labels(), parts.labels());
}

/// A stage that keeps its pairs, as `renketsu.spark` does: the pairs stay in the stage, cut
/// into `parts` partitions, each compared by features loaded on their own; the engine gets
/// only per-partition aggregates (groups, sample flags, links, totals).
struct Kept {
    worker: Features,
    parts: usize,
    sets: std::collections::HashMap<PairSet, Vec<(u32, u32)>>,
    calls: Vec<&'static str>,
}

impl Kept {
    fn chunks(&self, set: PairSet) -> Vec<&[(u32, u32)]> {
        let pairs = &self.sets[&set];
        pairs
            .chunks(pairs.len().div_ceil(self.parts).max(1))
            .collect()
    }
}

impl PairStage for Kept {
    fn candidates(
        &mut self,
        set: PairSet,
        keys: &mut [(Token, u32)],
        offsets: &[u32],
        max_block: usize,
        max_block_pairs: u64,
    ) -> Result<(Vec<(u32, u32)>, CandidateStats), ScoreError> {
        self.calls.push("candidates");
        let (pairs, stats) =
            InProcess.candidates(set, keys, offsets, max_block, max_block_pairs)?;
        self.sets.insert(set, pairs);
        Ok((Vec::new(), stats))
    }

    fn compare(&mut self, _: &Features, _: &[(u32, u32)]) -> Result<Vec<Compared>, ScoreError> {
        Err(ScoreError::Stage(
            "a stage that keeps its pairs is not asked to compare".into(),
        ))
    }

    fn keeps_pairs(&self) -> bool {
        true
    }

    fn groups(&mut self, set: PairSet, _: &Features) -> Result<Vec<PairGroup>, ScoreError> {
        self.calls.push("groups");
        // Partial groups of each partition, last partition first: the engine adds them up.
        let mut out = Vec::new();
        for chunk in self.chunks(set).into_iter().rev() {
            let compared = self.worker.compare_all(chunk);
            out.extend(aggregate::group_compared(
                |g| self.worker.holder(g),
                chunk,
                &compared,
            ));
        }
        Ok(out)
    }

    fn contains(&mut self, set: PairSet, pairs: &[(u32, u32)]) -> Result<Vec<bool>, ScoreError> {
        self.calls.push("contains");
        let kept = &self.sets[&set];
        Ok(pairs
            .iter()
            .map(|p| kept.binary_search(p).is_ok())
            .collect())
    }

    fn select_links(
        &mut self,
        table: &WeightTerms,
        threshold: f64,
        veto: &[usize],
    ) -> Result<(Vec<renketsu_linkage::cluster::ScoredLink>, u64), ScoreError> {
        self.calls.push("select_links");
        let (mut links, mut vetoed) = (Vec::new(), 0);
        for chunk in self.chunks(PairSet::All) {
            let compared = self.worker.compare_all(chunk);
            let codes: Vec<u32> = compared.iter().map(|c| c.code).collect();
            let bits: Vec<f32> = compared.iter().map(|c| c.tf_bits).collect();
            let weights = aggregate::weights_of(table, &codes, &bits);
            let (l, v) = aggregate::select_links(
                self.worker.dims(),
                chunk,
                &codes,
                &weights,
                threshold,
                veto,
            );
            links.extend(l);
            vetoed += v;
        }
        Ok((links, vetoed))
    }

    fn totals(
        &mut self,
        table: &WeightTerms,
        ctx: &TotalsContext,
    ) -> Result<CandidateTotals, ScoreError> {
        self.calls.push("totals");
        let mut out = CandidateTotals::default();
        for chunk in self.chunks(PairSet::All) {
            let compared = self.worker.compare_all(chunk);
            let codes: Vec<u32> = compared.iter().map(|c| c.code).collect();
            let bits: Vec<f32> = compared.iter().map(|c| c.tf_bits).collect();
            let weights = aggregate::weights_of(table, &codes, &bits);
            out.merge(&aggregate::candidate_totals(
                ctx,
                self.worker.dims(),
                chunk,
                &codes,
                &weights,
            ));
        }
        Ok(out)
    }

    fn cluster(
        &mut self,
        job: ClusterJob<'_>,
    ) -> Result<(Vec<u32>, usize, ScoredClusterStats), ScoreError> {
        self.calls.push("cluster");
        Ok(job.run_by_component())
    }
}

/// A stage that keeps its pairs and answers only with aggregates of its partitions gives
/// the engine's run: the same clusters, pairs, scores and summary (timings aside), with and
/// without a training sample; the engine never receives a candidate pair.
#[test]
fn a_stage_that_keeps_its_pairs_links_as_the_engine() {
    let schema = Schema::from_toml(SCHEMA).unwrap();
    let files = ab_token_files(&schema);
    let inputs = || ab_inputs(&files);
    let scoring_json = |s: &Summary| {
        let mut v = serde_json::to_value(s.scoring.as_ref().unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("timings_ms");
        v
    };
    for train_records in [None, Some(150)] {
        let mut schema = schema.clone();
        if let Some(t) = train_records {
            schema.scoring.as_mut().unwrap().train_records = t;
        }
        let plan = LinkPlan::new(&schema, Keys::TokenFiles, LinkOptions::new("p", TODAY)).unwrap();
        let mut engine = plan.run(inputs(), &mut NoObserver).unwrap();
        let mut stage = Kept {
            worker: worker_features(&schema, &files),
            parts: 3,
            sets: Default::default(),
            calls: Vec::new(),
        };
        let mut kept = plan
            .run_with(inputs(), &mut NoObserver, &mut stage)
            .unwrap();
        let want: &[&str] = if train_records.is_some() {
            &[
                "candidates",
                "candidates",
                "groups",
                "contains",
                "groups",
                "contains",
                "select_links",
                "cluster",
                "totals",
            ]
        } else {
            &[
                "candidates",
                "groups",
                "contains",
                "select_links",
                "cluster",
                "totals",
            ]
        };
        assert_eq!(stage.calls, want);
        assert_eq!(engine.labels(), kept.labels());
        let write = |l: &mut renketsu_linkage::engine::Linked<'_>| {
            let pids = random_pseudonyms(l.clusters(), &mut rand::rng());
            let mut out = MemoryOutputs::default();
            let summary = l.write(&pids, &mut out).unwrap();
            (out, summary)
        };
        let ((eo, es), (ko, ks)) = (write(&mut engine), write(&mut kept));
        assert!(eo.text("pairs.csv").lines().count() > 100);
        assert_eq!(eo.text("pairs.csv"), ko.text("pairs.csv"));
        assert_eq!(eo.text("pair_scores.csv"), ko.text("pair_scores.csv"));
        assert_eq!(scoring_json(&es), scoring_json(&ks));
    }
}
