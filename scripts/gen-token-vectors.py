#!/usr/bin/env python3
"""Independent reference implementation of renketsu exact tokens (SPEC.md §4).

This script is the *independent* reference for the exact-token derivation of SPEC.md §4. It
shares no code with the Rust implementation (linkage/core/src/token.rs): it uses only the
Python 3 standard library (`hmac`, `hashlib`), and HKDF-SHA256 is written out below from
RFC 5869 (Extract + Expand), checked against RFC 5869 test case A.1 before anything is
generated. Its output is the test-vector file

    linkage/core/test-vectors/exact-tokens.json

which the Rust test linkage/core/tests/token_vectors.rs checks byte for byte.

Derivation (SPEC.md §4):

    LP(x)    = u32_be(len(x)) || x
    VP(x)    = leb128(len(x)) || x          (unsigned LEB128, minimal)
    K_recipe = HKDF-SHA256(salt = "renketsu/v1/recipe-key", ikm = 32-byte project master secret,
                           info = LP(project) || LP(recipe) || u32_be(version), L = 32)
    head     = LP("renketsu/v1/exact") || LP(recipe) || u32_be(version) || u32_be(n)
               || LP(field_1) || ... || LP(field_n)
               || zero bytes up to the next multiple of 64 bytes
    preimage = head || VP(value_1) || ... || VP(value_n)
    token    = HMAC-SHA256(K_recipe, preimage)

All strings are UTF-8; lengths are byte lengths.

Usage (from the repository root):

    python3 scripts/gen-token-vectors.py           # (re)write the vector file
    python3 scripts/gen-token-vectors.py --check   # exit 1 if the file is missing or stale
    cargo test -p renketsu-linkage --test token_vectors

The output is deterministic: fixed test secrets, fixed vector order, fixed JSON layout, so
re-running the script produces a byte-identical file. The master secrets below are obviously
test values (00..1f, 32 x 0x42, ...) and must never be used for a real project.
"""

import hashlib
import hmac
import json
import struct
import sys
from pathlib import Path

RECIPE_KEY_SALT = b"renketsu/v1/recipe-key"
PREIMAGE_DOMAIN = b"renketsu/v1/exact"

OUT_PATH = (
    Path(__file__).resolve().parent.parent
    / "linkage"
    / "core"
    / "test-vectors"
    / "exact-tokens.json"
)


# --- RFC 5869 HKDF with SHA-256, written out -------------------------------------------------

HASH_LEN = hashlib.sha256().digest_size  # 32


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """RFC 5869 §2.2: PRK = HMAC-Hash(salt, IKM); an absent salt is HashLen zero bytes."""
    if not salt:
        salt = b"\x00" * HASH_LEN
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 §2.3: T(i) = HMAC-Hash(PRK, T(i-1) | info | i), OKM = first L octets."""
    if length > 255 * HASH_LEN:
        raise ValueError("HKDF-Expand: L too large")
    okm = b""
    t = b""
    i = 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        okm += t
        i += 1
    return okm[:length]


def hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


def self_test_hkdf() -> None:
    """RFC 5869 Appendix A.1 (basic test case with SHA-256)."""
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    prk = hkdf_extract(salt, ikm)
    assert prk.hex() == (
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    ), "HKDF-Extract fails RFC 5869 A.1"
    okm = hkdf_expand(prk, info, 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c"
        "5db02d56ecc4c5bf34007208d5b887185865"
    ), "HKDF-Expand fails RFC 5869 A.1"


# --- SPEC.md §4 ------------------------------------------------------------------------------


def u32_be(n: int) -> bytes:
    return struct.pack(">I", n)


def lp(x: bytes) -> bytes:
    return u32_be(len(x)) + x


def recipe_key(master_secret: bytes, project: str, recipe: str, version: int) -> bytes:
    assert len(master_secret) == 32
    info = lp(project.encode("utf-8")) + lp(recipe.encode("utf-8")) + u32_be(version)
    return hkdf(RECIPE_KEY_SALT, master_secret, info, 32)


def leb128(n: int) -> bytes:
    """Unsigned LEB128, minimal encoding (7 bits per byte, low group first, high bit = more)."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def vp(x: bytes) -> bytes:
    return leb128(len(x)) + x


def preimage(recipe: str, version: int, fields: list) -> bytes:
    head = lp(PREIMAGE_DOMAIN) + lp(recipe.encode("utf-8")) + u32_be(version) + u32_be(len(fields))
    for name, _ in fields:
        head += lp(name.encode("utf-8"))
    head += b"\x00" * (-len(head) % 64)
    assert len(head) % 64 == 0
    tail = b""
    for _, value in fields:
        assert value, "normalized values are never empty"
        tail += vp(value.encode("utf-8"))
    return head + tail


def token(key: bytes, pre: bytes) -> bytes:
    return hmac.new(key, pre, hashlib.sha256).digest()


# --- The vectors -----------------------------------------------------------------------------

SECRET_SEQ = bytes(range(32))  # 00 01 02 .. 1f
SECRET_42 = bytes([0x42] * 32)
SECRET_A5 = bytes([0xA5] * 32)
SECRET_FF = bytes([0xFF] * 32)

# (name, master secret, project, recipe, version, [(field, normalized value), ...])
CASES = [
    (
        "febrl_ascii_given_surname_dob",
        SECRET_SEQ,
        "febrl-demo",
        "given_surname_dob",
        1,
        [("given_name", "james"), ("surname", "smith"), ("date_of_birth", "1985-03-12")],
    ),
    (
        "jp_katakana_name_dob",
        SECRET_42,
        "jp-cohort-2026",
        "kana_name_dob",
        1,
        [("name_kana", "ヤマダ タロウ"), ("date_of_birth", "1970-03-15")],
    ),
    (
        "jp_kanji_name_dob_sex",
        SECRET_42,
        "jp-cohort-2026",
        "kanji_name_dob_sex",
        1,
        [("name_kanji", "山田 太郎"), ("date_of_birth", "1970-03-15"), ("sex", "1")],
    ),
    (
        "single_field_phone",
        SECRET_A5,
        "single-field",
        "phone",
        1,
        [("phone", "09012345678")],
    ),
    (
        "five_fields",
        SECRET_SEQ,
        "febrl-demo",
        "full_identity",
        3,
        [
            ("given_name", "mary"),
            ("surname", "o'brien"),
            ("date_of_birth", "1962-11-30"),
            ("sex", "2"),
            ("postcode", "2602"),
        ],
    ),
    # Same secret, recipe, version and fields; only the project differs.
    (
        "project_alpha",
        SECRET_42,
        "study-alpha",
        "name_dob",
        1,
        [("name", "taro yamada"), ("dob", "1970-03-15")],
    ),
    (
        "project_beta",
        SECRET_42,
        "study-beta",
        "name_dob",
        1,
        [("name", "taro yamada"), ("dob", "1970-03-15")],
    ),
    # Same everything; only the recipe version differs (bound into key and preimage).
    (
        "recipe_version_1",
        SECRET_SEQ,
        "versioning",
        "name_dob",
        1,
        [("name", "hanako suzuki"), ("dob", "2001-01-01")],
    ),
    (
        "recipe_version_2",
        SECRET_SEQ,
        "versioning",
        "name_dob",
        2,
        [("name", "hanako suzuki"), ("dob", "2001-01-01")],
    ),
    # One character moved across the field boundary: "ab","c" vs "a","bc". Length prefixes
    # make the preimages (and so the tokens) differ.
    (
        "boundary_ab_c",
        SECRET_FF,
        "boundary",
        "two_fields",
        1,
        [("f", "ab"), ("g", "c")],
    ),
    (
        "boundary_a_bc",
        SECRET_FF,
        "boundary",
        "two_fields",
        1,
        [("f", "a"), ("g", "bc")],
    ),
    # A value longer than 255 bytes: its length prefix has two non-zero bytes (00 00 01 2c).
    (
        "long_kanji_value_300_bytes",
        SECRET_A5,
        "long-values",
        "address",
        1,
        [("address", "東京都千代田区" * 14 + "一二")],
    ),
]


def build() -> dict:
    vectors = []
    for name, secret, project, recipe, version, fields in CASES:
        key = recipe_key(secret, project, recipe, version)
        pre = preimage(recipe, version, fields)
        vectors.append(
            {
                "name": name,
                "master_secret": secret.hex(),
                "project": project,
                "recipe": recipe,
                "version": version,
                "fields": [[f, v] for f, v in fields],
                "recipe_key": key.hex(),
                "preimage": pre.hex(),
                "token": token(key, pre).hex(),
            }
        )
    by_name = {v["name"]: v for v in vectors}
    assert len(by_name) == len(vectors), "vector names must be unique"
    # The properties the paired vectors are there to show.
    for a, b in [
        ("project_alpha", "project_beta"),
        ("recipe_version_1", "recipe_version_2"),
        ("boundary_ab_c", "boundary_a_bc"),
    ]:
        assert by_name[a]["token"] != by_name[b]["token"], (a, b)
    assert by_name["project_alpha"]["preimage"] == by_name["project_beta"]["preimage"]
    assert by_name["boundary_ab_c"]["recipe_key"] == by_name["boundary_a_bc"]["recipe_key"]
    assert by_name["boundary_ab_c"]["preimage"] != by_name["boundary_a_bc"]["preimage"]
    long_value = by_name["long_kanji_value_300_bytes"]["fields"][0][1]
    assert len(long_value.encode("utf-8")) == 300
    return {
        "description": (
            "Exact-token test vectors for renketsu, generated by scripts/gen-token-vectors.py, "
            "an independent Python standard-library implementation (HKDF per RFC 5869, "
            "HMAC-SHA256). Field values are already normalized. Master secrets are test "
            "values only. Checked by linkage/core/tests/token_vectors.rs."
        ),
        "derivation": "SPEC.md §4",
        "vectors": vectors,
    }


def render(doc: dict) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def main(argv: list) -> int:
    self_test_hkdf()
    text = render(build())
    if argv[1:] == ["--check"]:
        try:
            current = OUT_PATH.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            print(f"{OUT_PATH} is missing or stale; run scripts/gen-token-vectors.py", file=sys.stderr)
            return 1
        print(f"{OUT_PATH} is up to date")
        return 0
    if argv[1:]:
        print("usage: gen-token-vectors.py [--check]", file=sys.stderr)
        return 2
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT_PATH, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    print(f"wrote {len(build()['vectors'])} vectors to {OUT_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
