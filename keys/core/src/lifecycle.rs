//! Key lifecycle of the custodian's epoch keys (SPEC.md, store section): states, the allowed
//! transitions, an injectable [`Clock`], and the derivation of an epoch's OPRF key from its
//! seed.
//!
//! ```text
//!   Pending ──activate──▶ Active ──retire──▶ Retired
//!      │                    │                   │
//!      └──────revoke────────┴──────revoke───────┴──▶ Revoked   (terminal; no way back)
//! ```
//! Only an **active** key evaluates. A **retired** key can still be the source or target of a
//! re-keying delta; a **revoked** key can be used for nothing.

use core::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::oprf::{Mode, OprfError, SCALAR_LEN, SecretKey};

/// Lifecycle state of one epoch key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Created, waiting for its activation time; does not evaluate yet.
    Pending,
    /// The current key of its recipe: evaluates.
    Active,
    /// Superseded by a newer epoch: no evaluations; still usable for re-keying deltas.
    Retired,
    /// Revoked: usable for nothing, forever.
    Revoked,
}

impl KeyState {
    /// Every state, in lifecycle order.
    pub const ALL: [KeyState; 4] = [Self::Pending, Self::Active, Self::Retired, Self::Revoked];

    /// The lower-case name stored in databases and printed in messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Revoked => "revoked",
        }
    }

    /// Parses [`KeyState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The state `event` leads to from `self`.
    ///
    /// # Errors
    /// [`TransitionError`] naming the state, the event and why it is refused.
    pub fn apply(self, event: KeyEvent) -> Result<KeyState, TransitionError> {
        use KeyEvent as E;
        use KeyState as S;
        match (self, event) {
            (S::Pending, E::Activate) => Ok(S::Active),
            (S::Active, E::Retire) => Ok(S::Retired),
            (S::Revoked, _) => Err(TransitionError {
                from: self,
                event,
                reason: "a revoked key stays revoked",
            }),
            (_, E::Revoke) => Ok(S::Revoked),
            (_, E::Activate) => Err(TransitionError {
                from: self,
                event,
                reason: "only a pending key can be activated",
            }),
            (_, E::Retire) => Err(TransitionError {
                from: self,
                event,
                reason: "only the active key can be retired",
            }),
        }
    }

    /// Whether the key may evaluate blinded elements (only [`KeyState::Active`]).
    pub const fn can_evaluate(self) -> bool {
        matches!(self, Self::Active)
    }

    /// Whether the key may be the source or target of a re-keying delta (any state except
    /// [`KeyState::Revoked`] and [`KeyState::Pending`]).
    pub const fn can_rekey(self) -> bool {
        matches!(self, Self::Active | Self::Retired)
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyEvent {
    /// A pending key becomes the active key (its activation time has come).
    Activate,
    /// The active key is superseded by a newer epoch.
    Retire,
    /// The key is revoked.
    Revoke,
}

impl fmt::Display for KeyEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Activate => "activate",
            Self::Retire => "retire",
            Self::Revoke => "revoke",
        })
    }
}

/// A refused lifecycle transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {event} a {from} key: {reason}")]
pub struct TransitionError {
    /// The key's state.
    pub from: KeyState,
    /// The refused event.
    pub event: KeyEvent,
    /// Why, in words.
    pub reason: &'static str,
}

/// A point in time: milliseconds since the Unix epoch, UTC (the unit of the wire protocol's
/// `*_unix_ms` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From milliseconds since the Unix epoch.
    pub const fn from_unix_ms(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_unix_ms(self) -> i64 {
        self.0
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }
}

/// A source of the current time, injected so that tests control activation and expiry
/// (janus `core/src/time.rs` style).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct MockClock(Arc<AtomicI64>);

impl MockClock {
    /// A clock standing at `t`.
    pub fn new(t: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(t.0)))
    }

    /// Moves the clock forward by `d` (every clone sees it).
    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to `t`.
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Default for MockClock {
    /// 2026-01-01T00:00:00Z.
    fn default() -> Self {
        Self::new(Timestamp(1_767_225_600_000))
    }
}

impl Clock for MockClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// Length of an epoch seed in bytes.
pub const EPOCH_SEED_LEN: usize = SCALAR_LEN;
/// Domain tag at the start of the `DeriveKeyPair` info of an epoch key.
pub const EPOCH_KEY_INFO_DOMAIN: &[u8] = b"renketsu/epoch-key/v1";
/// The RFC 9497 mode whose context string `DeriveKeyPair` uses for every epoch key. One key
/// serves both OPRF and VOPRF evaluations (BlindEvaluate is `k·B` in both); fixing the mode
/// here makes the published public key the one VOPRF proofs verify against.
pub const EPOCH_KEY_DERIVE_MODE: Mode = Mode::Voprf;

/// A fresh random epoch seed (32 bytes, zeroized on drop).
pub fn generate_epoch_seed<R: rand::CryptoRng + ?Sized>(
    rng: &mut R,
) -> Zeroizing<[u8; EPOCH_SEED_LEN]> {
    let mut seed = Zeroizing::new([0u8; EPOCH_SEED_LEN]);
    rng.fill_bytes(seed.as_mut());
    seed
}

/// The `info` of an epoch key:
/// `"renketsu/epoch-key/v1" || u16be(len project) || project || u16be(len recipe) || recipe ||
/// u64be(epoch)`.
///
/// # Errors
/// [`OprfError::TooLong`] if a name exceeds 65535 bytes or the info exceeds 65535 bytes.
pub fn epoch_key_info(project: &str, recipe: &str, epoch: u64) -> Result<Vec<u8>, OprfError> {
    let mut info = EPOCH_KEY_INFO_DOMAIN.to_vec();
    for (what, part) in [("project name", project), ("recipe name", recipe)] {
        let len = u16::try_from(part.len()).map_err(|_| OprfError::TooLong {
            what,
            len: part.len(),
        })?;
        info.extend_from_slice(&len.to_be_bytes());
        info.extend_from_slice(part.as_bytes());
    }
    info.extend_from_slice(&epoch.to_be_bytes());
    Ok(info)
}

/// The OPRF key of (project, recipe, epoch): `DeriveKeyPair(seed, info)` (RFC 9497 §3.2.1)
/// with the context string of [`EPOCH_KEY_DERIVE_MODE`] and `info` from [`epoch_key_info`].
///
/// # Errors
/// [`OprfError::TooLong`]; [`OprfError::DeriveKeyPair`] (probability about 2⁻²⁵⁶⁰).
pub fn derive_epoch_key(
    seed: &[u8; EPOCH_SEED_LEN],
    project: &str,
    recipe: &str,
    epoch: u64,
) -> Result<SecretKey, OprfError> {
    let info = epoch_key_info(project, recipe, epoch)?;
    SecretKey::derive(EPOCH_KEY_DERIVE_MODE, seed, &info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn transition_table() {
        use KeyEvent as E;
        use KeyState as S;
        let ok = [
            (S::Pending, E::Activate, S::Active),
            (S::Pending, E::Revoke, S::Revoked),
            (S::Active, E::Retire, S::Retired),
            (S::Active, E::Revoke, S::Revoked),
            (S::Retired, E::Revoke, S::Revoked),
        ];
        for from in S::ALL {
            for event in [E::Activate, E::Retire, E::Revoke] {
                let want = ok
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|t| t.2);
                match (from.apply(event), want) {
                    (Ok(got), Some(w)) => assert_eq!(got, w),
                    (Err(err), None) => {
                        assert_eq!((err.from, err.event), (from, event));
                        assert!(
                            err.to_string()
                                .starts_with(&format!("cannot {event} a {from}"))
                        );
                    }
                    (got, want) => panic!("{from} {event}: got {got:?}, want {want:?}"),
                }
            }
        }
        assert_eq!(
            S::Revoked.apply(E::Revoke).unwrap_err().to_string(),
            "cannot revoke a revoked key: a revoked key stays revoked"
        );
    }

    #[test]
    fn state_names_round_trip() {
        for s in KeyState::ALL {
            assert_eq!(KeyState::parse(s.as_str()), Some(s));
        }
        assert_eq!(KeyState::parse("Active"), None);
        assert!(KeyState::Active.can_evaluate() && !KeyState::Retired.can_evaluate());
        assert!(KeyState::Retired.can_rekey() && !KeyState::Revoked.can_rekey());
    }

    fn event() -> impl Strategy<Value = KeyEvent> {
        prop_oneof![
            Just(KeyEvent::Activate),
            Just(KeyEvent::Retire),
            Just(KeyEvent::Revoke)
        ]
    }

    proptest! {
        /// Over any event sequence: states only move forward in lifecycle order, a refused
        /// event leaves the state unchanged, and once revoked nothing is accepted.
        #[test]
        fn transitions_are_monotone_and_revocation_is_final(
            events in proptest::collection::vec(event(), 0..40)
        ) {
            let rank = |s: KeyState| KeyState::ALL.iter().position(|x| *x == s).unwrap();
            let mut state = KeyState::Pending;
            let mut was_active = false;
            for e in events {
                match state.apply(e) {
                    Ok(next) => {
                        prop_assert!(rank(next) > rank(state), "{state} -{e}-> {next}");
                        prop_assert_ne!(state, KeyState::Revoked);
                        if next == KeyState::Retired { prop_assert!(was_active); }
                        was_active |= next == KeyState::Active;
                        state = next;
                    }
                    Err(err) => {
                        prop_assert_eq!(err.from, state);
                        prop_assert_eq!(err.event, e);
                    }
                }
            }
            if state == KeyState::Revoked {
                for e in [KeyEvent::Activate, KeyEvent::Retire, KeyEvent::Revoke] {
                    prop_assert!(state.apply(e).is_err());
                }
            }
        }
    }

    #[test]
    fn mock_clock_is_shared_and_moves_only_when_told() {
        let c = MockClock::default();
        let c2 = c.clone();
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_secs(90));
        assert_eq!(c2.now().as_unix_ms(), t0.as_unix_ms() + 90_000);
        c2.set(Timestamp::from_unix_ms(5));
        assert_eq!(c.now(), Timestamp::from_unix_ms(5));
        assert!(SystemClock.now().as_unix_ms() > 1_700_000_000_000);
    }

    #[test]
    fn epoch_keys_bind_seed_project_recipe_epoch() {
        let seed = [7u8; 32];
        let k = derive_epoch_key(&seed, "p", "r/v1", 1).unwrap();
        // The derivation is DeriveKeyPair with the documented info, nothing else.
        let info = epoch_key_info("p", "r/v1", 1).unwrap();
        let mut want = b"renketsu/epoch-key/v1\x00\x01p\x00\x04r/v1".to_vec();
        want.extend_from_slice(&1u64.to_be_bytes());
        assert_eq!(info, want);
        let direct = SecretKey::derive(Mode::Voprf, &seed, &info).unwrap();
        assert_eq!(*k.to_bytes(), *direct.to_bytes());
        assert_eq!(
            *derive_epoch_key(&seed, "p", "r/v1", 1).unwrap().to_bytes(),
            *k.to_bytes()
        );
        let others = [
            derive_epoch_key(&[8u8; 32], "p", "r/v1", 1).unwrap(),
            derive_epoch_key(&seed, "q", "r/v1", 1).unwrap(),
            derive_epoch_key(&seed, "p", "r/v2", 1).unwrap(),
            derive_epoch_key(&seed, "p", "r/v1", 2).unwrap(),
            // Shifting bytes between project and recipe changes the info.
            derive_epoch_key(&seed, "pr", "/v1", 1).unwrap(),
        ];
        for o in &others {
            assert_ne!(*o.to_bytes(), *k.to_bytes());
        }
        assert!(matches!(
            epoch_key_info(&"x".repeat(70_000), "r", 1),
            Err(OprfError::TooLong { .. })
        ));
    }
}
