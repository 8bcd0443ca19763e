//! A holder's CLK encoding (SPEC.md §7): the schema's encoder with its salts and hardening,
//! the schema field behind each encoder input, BLIP if configured (SPEC.md §7.3), and a
//! position cache. One per holder input; shared by `renketsu link` on CSVs and `renketsu
//! tokenize`, so that both make the same filters.

use rand::RngCore;
use zeroize::Zeroizing;

use super::native::{NativeEncoder, PositionCache};
use crate::schema::Schema;
use crate::secret::ProjectSecret;
use crate::tokenizer::RecordTokens;

/// A holder's CLK encoder. Not `Sync` (the cache and the RNG are per thread).
pub struct HolderEncoding {
    encoder: NativeEncoder,
    /// Schema field of each encoder input: one per feature, then the salt fields.
    inputs: Vec<usize>,
    features: usize,
    blip: Option<f64>,
    cache: PositionCache,
    rng: Box<dyn RngCore>,
}

impl std::fmt::Debug for HolderEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HolderEncoding")
            .field("features", &self.features)
            .field("blip", &self.blip)
            .finish_non_exhaustive()
    }
}

impl HolderEncoding {
    /// The encoding of a holder in embedded mode (keys derived from the project secret).
    /// `rng` draws BLIP's randomized response (fresh randomness per record); `None` when the
    /// schema has no `[clk]`.
    pub fn from_schema(
        schema: &Schema,
        secret: &ProjectSecret,
        project: &str,
        rng: Box<dyn RngCore>,
    ) -> Option<Self> {
        let (encoder, inputs) = NativeEncoder::from_schema(schema, secret, project)?;
        Some(Self::new(schema, encoder, inputs, rng))
    }

    /// The encoding of a holder in custodian mode: `keys` are the field keys the custodian
    /// issued, one per `[clk]` feature in order. `Ok(None)` without `[clk]`.
    ///
    /// # Errors
    /// When the number of keys does not match the schema's features.
    pub fn from_field_keys(
        schema: &Schema,
        keys: Vec<Zeroizing<[u8; 32]>>,
        rng: Box<dyn RngCore>,
    ) -> Result<Option<Self>, &'static str> {
        let made = NativeEncoder::from_schema_with_field_keys(schema, keys)?;
        Ok(made.map(|(encoder, inputs)| Self::new(schema, encoder, inputs, rng)))
    }

    fn new(
        schema: &Schema,
        encoder: NativeEncoder,
        inputs: Vec<usize>,
        rng: Box<dyn RngCore>,
    ) -> Self {
        let c = schema.clk.as_ref().expect("an encoder comes from [clk]");
        Self {
            cache: encoder.position_cache(),
            encoder,
            inputs,
            features: c.features.len(),
            blip: c.hardening.blip_epsilon,
            rng,
        }
    }

    /// Filter length in 64-bit words, after hardening.
    pub fn words(&self) -> usize {
        self.encoder.words()
    }

    /// The CLK of an accepted record (canonical values of the `[clk]` fields), into `buf`.
    pub fn encode(&mut self, rt: &RecordTokens, buf: &mut Vec<u64>) {
        let values: Vec<Option<&str>> = self
            .inputs
            .iter()
            .map(|&i| matches!(rt.status[i], Some(Ok(()))).then_some(rt.values[i].as_str()))
            .collect();
        debug_assert!(self.features <= values.len());
        self.encoder.encode_cached(&mut self.cache, &values, buf);
        if let Some(epsilon) = self.blip {
            super::harden::blip(buf, epsilon, &mut self.rng);
        }
    }
}
