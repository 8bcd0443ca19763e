//! RFC 9497 Appendix A.1 (ristretto255-SHA512) test vectors, read from the appendix text in
//! `../shared/vectors/rfc9497-appendix-a1-ristretto255-sha512.txt` beside the repository.
//!
//! Every vector of A.1.1 (OPRF), A.1.2 (VOPRF) and A.1.3 (POPRF) is checked: the key from Seed
//! and KeyInfo (and pkSm), BlindedElement from Input and Blind, EvaluationElement, the Proof
//! made with the given ProofRandomScalar, that the client accepts the RFC's proof, and Output
//! (from the client's Finalize and from the server's direct Evaluate). A missing file fails.

use std::collections::BTreeMap;

use renketsu_keys::oprf::{
    Blind, BlindResult, BlindedElement, EvaluatedElement, Mode, OprfClient, OprfServer,
    PoprfClient, PoprfServer, Proof, PublicKey, SecretKey, VoprfClient, VoprfServer,
};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/vectors/rfc9497-appendix-a1-ristretto255-sha512.txt"
);

/// `Name = value` fields; a value is a comma-separated list of hex strings.
type Fields = BTreeMap<String, String>;

/// One mode's section: its key fields and its test vectors.
#[derive(Debug)]
struct Section {
    mode: Mode,
    key: Fields,
    vectors: Vec<(String, Fields)>,
}

/// Parses the appendix text: section headings `A.1.n.  <MODE> Mode`, vector headings
/// `A.1.n.m.  Test Vector …`, fields `   Name = hex…` whose values continue on the following
/// indented lines (hex and lists are wrapped at arbitrary points). Stops at `A.2.`.
fn parse(text: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    let mut last_field: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            last_field = None;
            continue;
        }
        if !line.starts_with(' ') {
            // A heading.
            last_field = None;
            let (number, title) = trimmed.split_once(char::is_whitespace).unwrap();
            let title = title.trim();
            if number.starts_with("A.2") {
                break;
            }
            match number.trim_end_matches('.').split('.').count() {
                // "A.1.n" with a mode title
                3 => {
                    let mode = match title {
                        "OPRF Mode" => Mode::Oprf,
                        "VOPRF Mode" => Mode::Voprf,
                        "POPRF Mode" => Mode::Poprf,
                        other => panic!("unknown section {number} {other}"),
                    };
                    sections.push(Section {
                        mode,
                        key: Fields::new(),
                        vectors: Vec::new(),
                    });
                }
                4 => {
                    let section = sections.last_mut().expect("vector outside a mode section");
                    section
                        .vectors
                        .push((format!("{number} {title}"), Fields::new()));
                }
                _ => {} // "A.1." itself
            }
            continue;
        }
        let Some(section) = sections.last_mut() else {
            continue;
        };
        let fields = match section.vectors.last_mut() {
            Some((_, fields)) => fields,
            None => &mut section.key,
        };
        if let Some((name, value)) = trimmed.split_once(" = ") {
            let name = name.trim().to_owned();
            assert!(
                fields
                    .insert(name.clone(), value.trim().to_owned())
                    .is_none(),
                "duplicate field {name}"
            );
            last_field = Some(name);
        } else {
            let name = last_field
                .as_ref()
                .unwrap_or_else(|| panic!("continuation without a field: {line:?}"));
            fields.get_mut(name).unwrap().push_str(trimmed);
        }
    }
    sections
}

fn list(fields: &Fields, name: &str) -> Vec<Vec<u8>> {
    let value = fields
        .get(name)
        .unwrap_or_else(|| panic!("field {name} missing"));
    value
        .split(',')
        .map(|h| hex::decode(h).unwrap_or_else(|e| panic!("{name}: bad hex {h:?}: {e}")))
        .collect()
}

fn one(fields: &Fields, name: &str) -> Vec<u8> {
    let mut values = list(fields, name);
    assert_eq!(values.len(), 1, "{name} should be a single value");
    values.remove(0)
}

/// What one test vector holds; lists are per batch element.
struct Vector {
    inputs: Vec<Vec<u8>>,
    blinds: Vec<Vec<u8>>,
    blinded: Vec<Vec<u8>>,
    evaluated: Vec<Vec<u8>>,
    outputs: Vec<Vec<u8>>,
    proof: Option<Vec<u8>>,
    proof_nonce: Option<Vec<u8>>,
    info: Option<Vec<u8>>,
}

impl Vector {
    fn from_fields(fields: &Fields) -> Self {
        let v = Vector {
            inputs: list(fields, "Input"),
            blinds: list(fields, "Blind"),
            blinded: list(fields, "BlindedElement"),
            evaluated: list(fields, "EvaluationElement"),
            outputs: list(fields, "Output"),
            proof: fields.contains_key("Proof").then(|| one(fields, "Proof")),
            proof_nonce: fields
                .contains_key("ProofRandomScalar")
                .then(|| one(fields, "ProofRandomScalar")),
            info: fields.contains_key("Info").then(|| one(fields, "Info")),
        };
        let n = v.inputs.len();
        for (name, len) in [
            ("Blind", v.blinds.len()),
            ("BlindedElement", v.blinded.len()),
            ("EvaluationElement", v.evaluated.len()),
            ("Output", v.outputs.len()),
        ] {
            assert_eq!(len, n, "{name} has {len} values for {n} inputs");
        }
        v
    }

    fn blinded_elements(&self) -> Vec<BlindedElement> {
        self.blinded
            .iter()
            .map(|b| BlindedElement::from_bytes(b).unwrap())
            .collect()
    }

    fn evaluated_elements(&self) -> Vec<EvaluatedElement> {
        self.evaluated
            .iter()
            .map(|e| EvaluatedElement::from_bytes(e).unwrap())
            .collect()
    }
}

/// Blinds every input with its given blind and checks the blinded elements.
fn check_blind(
    name: &str,
    v: &Vector,
    blind_with: impl Fn(&[u8], Blind) -> BlindResult,
) -> Vec<BlindResult> {
    v.inputs
        .iter()
        .zip(&v.blinds)
        .zip(&v.blinded)
        .map(|((input, blind), expected)| {
            let br = blind_with(input, Blind::from_bytes(blind).unwrap());
            assert_eq!(
                br.blinded_element.to_bytes().as_slice(),
                expected.as_slice(),
                "{name}: BlindedElement"
            );
            br
        })
        .collect()
}

fn check_evaluated(name: &str, got: &[EvaluatedElement], v: &Vector) {
    let got: Vec<Vec<u8>> = got.iter().map(|e| e.to_bytes().to_vec()).collect();
    assert_eq!(got, v.evaluated, "{name}: EvaluationElement");
}

/// Counts of what was checked, per mode: (vectors, batch elements).
type Counts = BTreeMap<&'static str, (usize, usize)>;

fn check_section(section: &Section, counts: &mut Counts) {
    let seed: [u8; 32] = one(&section.key, "Seed").try_into().unwrap();
    let key_info = one(&section.key, "KeyInfo");
    let sk = SecretKey::derive(section.mode, &seed, &key_info).unwrap();
    assert_eq!(
        sk.to_bytes().as_slice(),
        one(&section.key, "skSm").as_slice(),
        "{:?}: skSm",
        section.mode
    );
    let pk = sk.public_key();
    if section.mode != Mode::Oprf {
        let expected_pk = one(&section.key, "pkSm");
        assert_eq!(pk.to_bytes().as_slice(), expected_pk.as_slice(), "pkSm");
        assert_eq!(PublicKey::from_bytes(&expected_pk).unwrap(), pk);
    }

    let label = match section.mode {
        Mode::Oprf => "OPRF",
        Mode::Voprf => "VOPRF",
        Mode::Poprf => "POPRF",
    };
    for (name, fields) in &section.vectors {
        let name = format!("{label} {name}");
        let v = Vector::from_fields(fields);
        match section.mode {
            Mode::Oprf => {
                assert!(v.proof.is_none() && v.info.is_none());
                let client = OprfClient;
                let server = OprfServer::new(sk.clone());
                let brs = check_blind(&name, &v, |i, b| client.blind_with(i, b).unwrap());
                let evaluated = server.blind_evaluate_batch(&v.blinded_elements());
                check_evaluated(&name, &evaluated, &v);
                for (((input, br), eval), output) in v
                    .inputs
                    .iter()
                    .zip(&brs)
                    .zip(v.evaluated_elements())
                    .zip(&v.outputs)
                {
                    let got = client.finalize(input, br, &eval).unwrap();
                    assert_eq!(got.as_slice(), output.as_slice(), "{name}: Output");
                    assert_eq!(
                        server.evaluate(input).unwrap().as_slice(),
                        output.as_slice()
                    );
                    assert_eq!(
                        client.finalize_element(br, &eval),
                        server.evaluate_element(input).unwrap()
                    );
                }
            }
            Mode::Voprf => {
                assert!(v.info.is_none());
                let client = VoprfClient::new(pk);
                let server = VoprfServer::new(sk.clone());
                let brs = check_blind(&name, &v, |i, b| client.blind_with(i, b).unwrap());
                let nonce = v.proof_nonce.as_ref().expect("ProofRandomScalar");
                let batch = server
                    .blind_evaluate_batch_with(&v.blinded_elements(), nonce)
                    .unwrap();
                check_evaluated(&name, &batch.evaluated, &v);
                let expected_proof = v.proof.as_ref().expect("Proof");
                assert_eq!(
                    batch.proof.to_bytes().as_slice(),
                    expected_proof.as_slice(),
                    "{name}: Proof"
                );
                let proof = Proof::from_bytes(expected_proof).unwrap();
                let outputs = client
                    .finalize_batch(&v.inputs, &brs, &v.evaluated_elements(), &proof)
                    .unwrap();
                let outputs: Vec<Vec<u8>> = outputs.iter().map(|o| o.to_vec()).collect();
                assert_eq!(outputs, v.outputs, "{name}: Output");
                let elements = client
                    .finalize_element_batch(&brs, &v.evaluated_elements(), &proof)
                    .unwrap();
                for ((input, output), element) in v.inputs.iter().zip(&v.outputs).zip(&elements) {
                    assert_eq!(
                        server.evaluate(input).unwrap().as_slice(),
                        output.as_slice()
                    );
                    assert_eq!(*element, server.evaluate_element(input).unwrap());
                }
            }
            Mode::Poprf => {
                let info = v.info.as_ref().expect("Info");
                let client = PoprfClient::new(pk);
                let server = PoprfServer::new(sk.clone());
                let brs = check_blind(&name, &v, |i, b| client.blind_with(i, b).unwrap());
                let nonce = v.proof_nonce.as_ref().expect("ProofRandomScalar");
                let batch = server
                    .blind_evaluate_batch_with(&v.blinded_elements(), info, nonce)
                    .unwrap();
                check_evaluated(&name, &batch.evaluated, &v);
                let expected_proof = v.proof.as_ref().expect("Proof");
                assert_eq!(
                    batch.proof.to_bytes().as_slice(),
                    expected_proof.as_slice(),
                    "{name}: Proof"
                );
                let proof = Proof::from_bytes(expected_proof).unwrap();
                let outputs = client
                    .finalize_batch(&v.inputs, &brs, &v.evaluated_elements(), &proof, info)
                    .unwrap();
                let outputs: Vec<Vec<u8>> = outputs.iter().map(|o| o.to_vec()).collect();
                assert_eq!(outputs, v.outputs, "{name}: Output");
                for (input, output) in v.inputs.iter().zip(&v.outputs) {
                    assert_eq!(
                        server.evaluate(input, info).unwrap().as_slice(),
                        output.as_slice()
                    );
                }
            }
        }
        let entry = counts.entry(label).or_default();
        entry.0 += 1;
        entry.1 += v.inputs.len();
    }
}

#[test]
fn rfc9497_appendix_a1_ristretto255_sha512() {
    let text = std::fs::read_to_string(VECTORS)
        .unwrap_or_else(|e| panic!("RFC 9497 vectors not readable at {VECTORS}: {e}"));
    let sections = parse(&text);
    let modes: Vec<Mode> = sections.iter().map(|s| s.mode).collect();
    assert_eq!(modes, [Mode::Oprf, Mode::Voprf, Mode::Poprf]);

    let mut counts = Counts::new();
    for section in &sections {
        check_section(section, &mut counts);
    }
    // (vectors, batch elements) per mode: an empty or partial parse cannot pass.
    let expected: Counts = [("OPRF", (2, 2)), ("VOPRF", (3, 4)), ("POPRF", (3, 4))]
        .into_iter()
        .collect();
    assert_eq!(counts, expected, "vectors checked per mode");
}
