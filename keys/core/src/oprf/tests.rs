//! Unit and property tests of the OPRF module. The RFC 9497 vectors are in
//! `keys/core/tests/rfc9497_vectors.rs`.

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::group::expand_message_xmd;
use super::*;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 9380 Appendix K.3, expand_message_xmd(SHA-512), DST "QUUX-V01-CS02-with-expander-SHA512-256".
#[test]
fn expand_message_xmd_rfc9380_k3() {
    let dst: &[&[u8]] = &[b"QUUX-V01-CS02-with-expander-", b"SHA512-256"];
    assert_eq!(
        hex(&expand_message_xmd::<32>(&[b""], dst)),
        "6b9a7312411d92f921c6f68ca0b6380730a1a4d982c507211a90964c394179ba"
    );
    assert_eq!(
        hex(&expand_message_xmd::<32>(&[b"a", b"bc"], dst)),
        "0da749f12fbe5483eb066a5f595055679b976e93abe9be6f0f6318bce7aca8dc"
    );
    // Two blocks (ell = 2): exercises the strxor chaining.
    assert_eq!(
        hex(&expand_message_xmd::<128>(&[b"abc"], dst)),
        "7f1dddd13c08b543f2e2037b14cefb255b44c83cc397c1786d975653e36a6b11\
         bdd7732d8b38adb4a0edc26a0cef4bb45217135456e58fbca1703cd6032cb134\
         7ee720b87972d63fbf232587043ed2901bce7f22610c0419751c065922b48843\
         1851041310ad659e4b23520e1772ab29dcdeb2002222a363f0c2b1c972b3efe1"
    );
}

#[test]
fn context_string_has_a_raw_mode_byte() {
    assert_eq!(
        Mode::Voprf.context_string().as_slice(),
        b"OPRFV1-\x01-ristretto255-SHA512"
    );
    assert_eq!(Mode::Oprf.context_string()[7], 0);
    assert_eq!(Mode::Poprf.id(), 2);
}

#[test]
fn secrets_are_redacted_in_debug() {
    let sk = SecretKey::random(&mut rng(1));
    let sk_hex = hex(sk.to_bytes().as_slice());
    let delta = RekeyDelta::between(&sk, &SecretKey::random(&mut rng(2)));
    let br = OprfClient.blind(b"x", &mut rng(3)).unwrap();
    let server = VoprfServer::new(sk.clone());
    for shown in [
        format!("{sk:?}"),
        format!("{delta:?}"),
        format!("{br:?}"),
        format!("{server:?}"),
        format!("{:?}", br.blind),
    ] {
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains(&sk_hex), "{shown}");
        assert!(
            !shown.contains(&hex(br.blind.to_bytes().as_slice())),
            "{shown}"
        );
        assert!(
            !shown.contains(&hex(delta.to_bytes().as_slice())),
            "{shown}"
        );
    }
    // Public values print as hex.
    assert!(format!("{:?}", sk.public_key()).contains(&hex(&sk.public_key().to_bytes())));
}

#[test]
fn decoding_refuses_bad_encodings() {
    // The identity encodes as 32 zero bytes; RFC 9497 refuses it.
    assert_eq!(
        BlindedElement::from_bytes(&[0; 32]),
        Err(OprfError::InvalidElement)
    );
    assert_eq!(
        PublicKey::from_bytes(&[0; 32]),
        Err(OprfError::InvalidElement)
    );
    // Not canonical (≥ p), negative field element, wrong length.
    assert!(EvaluatedElement::from_bytes(&[0xff; 32]).is_err());
    let mut negative = [0u8; 32];
    negative[0] = 1;
    assert!(EvaluatedElement::from_bytes(&negative).is_err());
    assert!(EvaluatedElement::from_bytes(&[1; 31]).is_err());
    // Scalars: ℓ itself is not canonical, zero is not a key, lengths are exact.
    let ell = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    assert_eq!(
        SecretKey::from_bytes(&ell).unwrap_err(),
        OprfError::InvalidScalar
    );
    assert_eq!(
        SecretKey::from_bytes(&[0; 32]).unwrap_err(),
        OprfError::InvalidScalar
    );
    assert!(Blind::from_bytes(&[0; 32]).is_err());
    assert!(RekeyDelta::from_bytes(&[1; 33]).is_err());
    assert_eq!(
        Proof::from_bytes(&[0; 63]).unwrap_err(),
        OprfError::InvalidProof
    );
    let mut proof = [0u8; 64];
    proof[32..].copy_from_slice(&ell);
    assert_eq!(
        Proof::from_bytes(&proof).unwrap_err(),
        OprfError::InvalidProof
    );
    // Round trips.
    let sk = SecretKey::random(&mut rng(4));
    assert_eq!(
        SecretKey::from_bytes(sk.to_bytes().as_slice())
            .unwrap()
            .public_key(),
        sk.public_key()
    );
    let pk = sk.public_key();
    assert_eq!(PublicKey::from_bytes(&pk.to_bytes()).unwrap(), pk);
}

#[test]
fn derive_depends_on_mode_and_info_and_checks_lengths() {
    let seed = [7u8; 32];
    let a = SecretKey::derive(Mode::Oprf, &seed, b"project a").unwrap();
    let b = SecretKey::derive(Mode::Oprf, &seed, b"project b").unwrap();
    let c = SecretKey::derive(Mode::Voprf, &seed, b"project a").unwrap();
    assert_ne!(a.to_bytes(), b.to_bytes());
    assert_ne!(a.to_bytes(), c.to_bytes());
    assert_eq!(
        SecretKey::derive(Mode::Oprf, &seed, b"project a")
            .unwrap()
            .to_bytes(),
        a.to_bytes()
    );
    let long = vec![0u8; MAX_INPUT_LEN + 1];
    assert_eq!(
        SecretKey::derive(Mode::Oprf, &seed, &long).unwrap_err(),
        OprfError::TooLong {
            what: "key info",
            len: MAX_INPUT_LEN + 1
        }
    );
    assert!(matches!(
        OprfClient.blind(&long, &mut rng(5)),
        Err(OprfError::TooLong { what: "input", .. })
    ));
    assert!(OprfClient.blind(&long[1..], &mut rng(5)).is_ok());
}

#[test]
fn rekey_moves_elements_between_keys() {
    let k1 = SecretKey::random(&mut rng(10));
    let k2 = SecretKey::random(&mut rng(11));
    let s1 = OprfServer::new(k1.clone());
    let s2 = OprfServer::new(k2.clone());
    let delta = RekeyDelta::between(&k1, &k2);
    for input in [
        &b""[..],
        b"\xe3\x82\xbf\xe3\x83\x8a\xe3\x82\xab",
        b"1970-03-15|2",
    ] {
        let e1 = s1.evaluate_element(input).unwrap();
        let e2 = s2.evaluate_element(input).unwrap();
        assert_ne!(e1, e2);
        // rekey(k1·H(x), k2·k1⁻¹) == k2·H(x), and back.
        assert_eq!(rekey(&e1, &delta).unwrap(), e2);
        assert_eq!(rekey(&e2, &delta.inverse()).unwrap(), e1);
        // The re-keyed element gives the RFC output under k2.
        assert_eq!(
            finalize_from_element(input, &rekey(&e1, &delta).unwrap()).unwrap(),
            s2.evaluate(input).unwrap()
        );
        // The element a client gets through the blinded protocol is the same k1·H(x).
        let br = OprfClient.blind(input, &mut rng(12)).unwrap();
        let eval = s1.blind_evaluate(&br.blinded_element);
        assert_eq!(OprfClient.finalize_element(&br, &eval), e1);
    }
    let transported = RekeyDelta::from_bytes(delta.to_bytes().as_slice()).unwrap();
    let e1 = s1.evaluate_element(b"x").unwrap();
    assert_eq!(
        rekey(&e1, &transported).unwrap(),
        s2.evaluate_element(b"x").unwrap()
    );
    assert_eq!(
        rekey(&[0; 32], &delta).unwrap_err(),
        OprfError::InvalidElement
    );
}

#[test]
fn batches_must_be_non_empty_and_consistent() {
    let server = VoprfServer::new(SecretKey::random(&mut rng(20)));
    let client = VoprfClient::new(*server.public_key());
    assert!(matches!(
        server.blind_evaluate_batch(&[], &mut rng(21)),
        Err(OprfError::Batch(_))
    ));
    let brs: Vec<BlindResult> = [b"a", b"b"]
        .iter()
        .map(|i| client.blind(*i, &mut rng(22)).unwrap())
        .collect();
    let blinded: Vec<BlindedElement> = brs.iter().map(|b| b.blinded_element).collect();
    let batch = server.blind_evaluate_batch(&blinded, &mut rng(23)).unwrap();
    assert!(matches!(
        client.finalize_batch(&[b"a"], &brs, &batch.evaluated, &batch.proof),
        Err(OprfError::Batch(_))
    ));
    assert!(matches!(
        client.finalize_batch(&[b"a", b"b"], &brs, &batch.evaluated[..1], &batch.proof),
        Err(OprfError::Batch(_))
    ));
    let out = client
        .finalize_batch(&[b"a", b"b"], &brs, &batch.evaluated, &batch.proof)
        .unwrap();
    assert_eq!(out[1], server.evaluate(b"b").unwrap());
    // Evaluations in the wrong order, or a proof for another key, do not verify.
    let swapped = [batch.evaluated[1], batch.evaluated[0]];
    assert_eq!(
        client.finalize_batch(&[b"a", b"b"], &brs, &swapped, &batch.proof),
        Err(OprfError::Verify)
    );
    let other = VoprfClient::new(SecretKey::random(&mut rng(24)).public_key());
    assert_eq!(
        other.finalize_batch(&[b"a", b"b"], &brs, &batch.evaluated, &batch.proof),
        Err(OprfError::Verify)
    );
    // A proof for a sub-batch does not cover the whole batch.
    let single = server
        .blind_evaluate_batch(&blinded[..1], &mut rng(25))
        .unwrap();
    assert_eq!(
        client.finalize_batch(&[b"a", b"b"], &brs, &batch.evaluated, &single.proof),
        Err(OprfError::Verify)
    );
}

#[test]
fn poprf_info_is_bound() {
    let server = PoprfServer::new(SecretKey::random(&mut rng(30)));
    let client = PoprfClient::new(*server.public_key());
    let br = client.blind(b"x", &mut rng(31)).unwrap();
    let batch = server
        .blind_evaluate_batch(&[br.blinded_element], b"epoch 1", &mut rng(32))
        .unwrap();
    assert_eq!(
        client
            .finalize(b"x", &br, &batch.evaluated[0], &batch.proof, b"epoch 1")
            .unwrap(),
        server.evaluate(b"x", b"epoch 1").unwrap()
    );
    assert_eq!(
        client.finalize(b"x", &br, &batch.evaluated[0], &batch.proof, b"epoch 2"),
        Err(OprfError::Verify)
    );
    assert_ne!(
        server.evaluate(b"x", b"epoch 1").unwrap(),
        server.evaluate(b"x", b"epoch 2").unwrap()
    );
}

/// Flips `mask` (non-zero) into byte `index` of an encoding.
fn flip<const N: usize>(mut bytes: [u8; N], index: usize, mask: u8) -> [u8; N] {
    bytes[index % N] ^= mask;
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// blind → evaluate → finalize equals the direct evaluation Finalize(input, k·H(input)).
    #[test]
    fn oprf_blinded_equals_direct(
        input in proptest::collection::vec(any::<u8>(), 0..80),
        key_seed in any::<[u8; 32]>(),
        rng_seed in any::<u64>(),
    ) {
        let sk = SecretKey::derive(Mode::Oprf, &key_seed, b"prop").unwrap();
        let server = OprfServer::new(sk);
        let br = OprfClient.blind(&input, &mut rng(rng_seed)).unwrap();
        let eval = server.blind_evaluate(&br.blinded_element);
        let element = OprfClient.finalize_element(&br, &eval);
        prop_assert_eq!(element, server.evaluate_element(&input).unwrap());
        prop_assert_eq!(
            OprfClient.finalize(&input, &br, &eval).unwrap(),
            server.evaluate(&input).unwrap()
        );
        prop_assert_eq!(
            finalize_from_element(&input, &element).unwrap(),
            server.evaluate(&input).unwrap()
        );
    }

    /// VOPRF batches verify and equal direct evaluation; flipping one byte of the proof or of
    /// an evaluated element makes the client refuse the batch.
    #[test]
    fn voprf_batch_verifies_and_tampering_is_rejected(
        inputs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..4),
        key_seed in any::<[u8; 32]>(),
        rng_seed in any::<u64>(),
        index in any::<usize>(),
        mask in 1u8..,
    ) {
        let mut rng = rng(rng_seed);
        let server = VoprfServer::new(SecretKey::derive(Mode::Voprf, &key_seed, b"prop").unwrap());
        let client = VoprfClient::new(
            PublicKey::from_bytes(&server.public_key().to_bytes()).unwrap(),
        );
        let brs: Vec<BlindResult> =
            inputs.iter().map(|i| client.blind(i, &mut rng).unwrap()).collect();
        let blinded: Vec<BlindedElement> = brs
            .iter()
            .map(|b| BlindedElement::from_bytes(&b.blinded_element.to_bytes()).unwrap())
            .collect();
        let batch = server.blind_evaluate_batch(&blinded, &mut rng).unwrap();
        let proof = Proof::from_bytes(&batch.proof.to_bytes()).unwrap();
        let outputs = client.finalize_batch(&inputs, &brs, &batch.evaluated, &proof).unwrap();
        for (input, output) in inputs.iter().zip(&outputs) {
            prop_assert_eq!(*output, server.evaluate(input).unwrap());
        }

        let tampered = flip(proof.to_bytes(), index, mask);
        match Proof::from_bytes(&tampered) {
            Err(e) => prop_assert_eq!(e, OprfError::InvalidProof),
            Ok(bad) => prop_assert_eq!(
                client.finalize_batch(&inputs, &brs, &batch.evaluated, &bad),
                Err(OprfError::Verify)
            ),
        }

        let which = index % batch.evaluated.len();
        let mut evaluated = batch.evaluated.clone();
        match EvaluatedElement::from_bytes(&flip(evaluated[which].to_bytes(), index / 7, mask)) {
            Err(e) => prop_assert_eq!(e, OprfError::InvalidElement),
            Ok(bad) => {
                evaluated[which] = bad;
                prop_assert_eq!(
                    client.finalize_batch(&inputs, &brs, &evaluated, &proof),
                    Err(OprfError::Verify)
                );
            }
        }
    }

    /// POPRF: blinded evaluation under info equals direct evaluation under the same info.
    #[test]
    fn poprf_blinded_equals_direct(
        input in proptest::collection::vec(any::<u8>(), 0..40),
        info in proptest::collection::vec(any::<u8>(), 0..20),
        key_seed in any::<[u8; 32]>(),
        rng_seed in any::<u64>(),
    ) {
        let mut rng = rng(rng_seed);
        let server = PoprfServer::new(SecretKey::derive(Mode::Poprf, &key_seed, b"prop").unwrap());
        let client = PoprfClient::new(*server.public_key());
        let br = client.blind(&input, &mut rng).unwrap();
        let batch = server.blind_evaluate_batch(&[br.blinded_element], &info, &mut rng).unwrap();
        prop_assert_eq!(
            client.finalize(&input, &br, &batch.evaluated[0], &batch.proof, &info).unwrap(),
            server.evaluate(&input, &info).unwrap()
        );
    }
}
