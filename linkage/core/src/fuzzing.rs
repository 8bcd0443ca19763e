//! Fuzzing harnesses (rustls style: the logic lives here, the `fuzz/` targets are one line).

use crate::normalize::{NormalizeContext, Normalizer};

/// Runs every normalizer on `data` (if it is UTF-8) and checks the invariants that must hold
/// for any input: no panic, and a canonical value normalizes to itself.
///
/// # Panics
/// When an invariant fails; that is the finding.
pub fn normalize_all(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = NormalizeContext { today: 20_261_122 };
    let mut out = String::new();
    let mut again = String::new();
    for kind in Normalizer::ALL {
        if kind.apply(s, &ctx, &mut out).is_ok() {
            assert!(!out.is_empty(), "{kind:?}: empty canonical value for {s:?}");
            let r = kind.apply(&out, &ctx, &mut again);
            assert!(
                r.is_ok() && again == out,
                "{kind:?} not idempotent: {s:?} → {out:?} → {r:?} {again:?}"
            );
        }
    }
}
