//! End-to-end tests of the `renketsu` binary live in `tests/`; this library is empty on purpose.
