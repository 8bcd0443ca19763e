#!/usr/bin/env python3
"""Independent reference implementation of renketsu's own CLK encoding (SPEC.md §7.1).

It shares no code with the Rust encoder (linkage/core/src/clk/native.rs): only the Python 3
standard library (`hmac`, `hashlib`), with HKDF-SHA256 written out from RFC 5869 and checked
against its test case A.1 first. Output: linkage/core/test-vectors/native-clk.json, which
linkage/core/tests/native_clk_vectors.rs checks bit for bit (with and without the position
cache).

    K_field  = HKDF-SHA256(salt = "renketsu/v1/clk-key", IKM = project master secret,
                           info = LP(project) || LP(field), L = 32)
    tokens   = q-grams of the value padded with q-1 spaces each side (characters), or for
               positional features "i:" + i-th character (i from 1), or characters (q = 1)
    bit j of a token (j < k) = the (j mod 16)-th big-endian u16 of
               HMAC-SHA256(K_field, u32_be(j // 16) || UTF-8 token), mod bits

Filters are written as hex of bytes in which bit i of the filter is bit (i mod 8) of byte
i // 8 (the little-endian bytes of the u64 words).

    python3 scripts/gen-clk-vectors.py           # (re)write the vector file
    python3 scripts/gen-clk-vectors.py --check   # exit 1 if missing or stale
"""

import hashlib
import hmac
import json
import struct
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "linkage/core/test-vectors/native-clk.json"


def hkdf_sha256(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, t, i = b"", b"", 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        okm += t
        i += 1
    return okm[:length]


def check_hkdf() -> None:
    # RFC 5869 Appendix A.1
    okm = hkdf_sha256(
        bytes.fromhex("000102030405060708090a0b0c"),
        bytes.fromhex("0b" * 22),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        "34007208d5b887185865"
    ), "HKDF-SHA256 does not reproduce RFC 5869 A.1"


def lp(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def tokens(value: str, q: int, positional: bool):
    if positional:
        return [f"{i + 1}:{c}" for i, c in enumerate(value)]
    if q <= 1:
        return list(value)
    padded = " " * (q - 1) + value + " " * (q - 1)
    return [padded[i : i + q] for i in range(len(padded) - q + 1)]


def balance_perm(secret: bytes, project: str, bits: int):
    """SPEC.md §7.3: keyed Fisher-Yates over 0..2*bits with an HMAC-SHA256 counter stream."""
    key = hkdf_sha256(
        b"renketsu/v1/clk-balance", secret, lp(project.encode()) + struct.pack(">I", bits), 32
    )
    stream, counter = b"", 0

    def next_u32():
        nonlocal stream, counter
        if not stream:
            stream = hmac.new(key, struct.pack(">Q", counter), hashlib.sha256).digest()
            counter += 1
        v, stream = struct.unpack(">I", stream[:4])[0], stream[4:]
        return v

    n = 2 * bits
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        bound = i + 1
        zone = (2**32 // bound) * bound
        while True:
            x = next_u32()
            if x < zone:
                break
        j = x % bound
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def encode(secret: bytes, project: str, bits: int, features, values, hardening=None) -> str:
    hardening = hardening or {}
    filt = bytearray(bits // 8)
    for f, value in zip(features, values):
        if value is None:
            continue
        prefix = b""
        if f.get("salt") is not None:
            sv = values[f["salt"]["input"]]
            if sv is None:
                continue
            chars = f["salt"]["chars"]
            salt = (sv if chars == 0 else sv[:chars]).encode()
            prefix = b"\xff" + bytes([len(salt)]) + salt
        key = hkdf_sha256(
            b"renketsu/v1/clk-key", secret, lp(project.encode()) + lp(f["field"].encode()), 32
        )
        for tok in tokens(value, f["q"], f["positional"]):
            for j in range(f["k"]):
                if j % 16 == 0:
                    digest = hmac.new(
                        key, struct.pack(">I", j // 16) + prefix + tok.encode(), hashlib.sha256
                    ).digest()
                pos = struct.unpack(">H", digest[2 * (j % 16) : 2 * (j % 16) + 2])[0] % bits
                filt[pos // 8] |= 1 << (pos % 8)
    bit = lambda f, i: (f[i // 8] >> (i % 8)) & 1
    if hardening.get("xor_fold"):
        half = bits // 2
        folded = bytearray(half // 8)
        for i in range(half):
            if bit(filt, i) ^ bit(filt, i + half):
                folded[i // 8] |= 1 << (i % 8)
        filt, bits = folded, half
    if hardening.get("balance"):
        perm = balance_perm(secret, project, bits)
        out = bytearray(2 * bits // 8)
        for i in range(bits):
            p = perm[i] if bit(filt, i) else perm[bits + i]
            out[p // 8] |= 1 << (p % 8)
        filt = out
    return filt.hex()


def f(field, q=2, positional=False, k=20):
    return {"field": field, "q": q, "positional": positional, "k": k}


CASES = [
    {
        "name": "kana-name-dob-1024",
        "secret": bytes(range(32)),
        "project": "demo",
        "bits": 1024,
        "features": [f("kana_name", k=20), f("birth_date", 1, True, 10)],
        "records": [
            ["ヤマダタロウ", "1970-03-15"],
            ["ヤマダタロ", "1970-03-15"],
            [None, "1970-03-15"],
            ["ヤマダタロウ", None],
            [None, None],
            ["ab", "1"],
        ],
    },
    {
        "name": "febrl-like-2048-k-over-16",
        "secret": b"\x42" * 32,
        "project": "febrl",
        "bits": 2048,
        "features": [
            f("given_name", k=33),
            f("surname", 3, False, 17),
            f("postcode", 1, True, 6),
            f("chars", 1, False, 4),
        ],
        "records": [
            ["sarah", "bradshaw", "2161", "xyz"],
            ["sara", "bradshaw", "2161", ""],
            ["𠮷野", "齋藤", "0123456789012", "ｱ"],
        ],
    },
    {
        "name": "max-length-65536",
        "secret": b"\x07" * 32,
        "project": "p",
        "bits": 65536,
        "features": [f("name", k=16)],
        "records": [["アイウエオ"], ["カキクケコ"]],
    },
    {
        "name": "min-length-64",
        "secret": b"\x07" * 32,
        "project": "p",
        "bits": 64,
        "features": [f("name", k=3)],
        "records": [["アイ"], ["long value " * 8]],
    },
    {
        "name": "salted-by-birth-year-folded-balanced-512",
        "secret": b"\x11" * 32,
        "project": "harden",
        "bits": 512,
        "features": [
            dict(f("kana_name", k=12), salt={"input": 2, "chars": 4}),
            f("birth_date", 1, True, 6),
        ],
        "hardening": {"xor_fold": True, "balance": True},
        "records": [
            ["ヤマダタロウ", "1970-03-15", "1970-03-15"],
            ["ヤマダタロウ", "1971-03-15", "1971-03-15"],
            ["ヤマダタロウ", "1970-03-15", None],
            [None, None, None],
        ],
    },
    {
        "name": "salted-only-1024",
        "secret": b"\x11" * 32,
        "project": "harden",
        "bits": 1024,
        "features": [dict(f("kana_name", k=12), salt={"input": 1, "chars": 0})],
        "records": [["スズキ", "F"], ["スズキ", "M"], ["スズキ", None]],
    },
    {
        "name": "balanced-only-256",
        "secret": b"\x11" * 32,
        "project": "harden",
        "bits": 256,
        "features": [f("kana_name", k=12)],
        "hardening": {"balance": True},
        "records": [["スズキ"], [None]],
    },
]


def build() -> str:
    check_hkdf()
    out = []
    for c in CASES:
        out.append(
            {
                "name": c["name"],
                "secret_hex": c["secret"].hex(),
                "project": c["project"],
                "bits": c["bits"],
                "features": c["features"],
                "hardening": c.get("hardening", {}),
                "records": [
                    {
                        "values": r,
                        "filter_hex": encode(
                            c["secret"], c["project"], c["bits"], c["features"], r, c.get("hardening")
                        ),
                    }
                    for r in c["records"]
                ],
            }
        )
    doc = {
        "description": "renketsu native CLK vectors (SPEC.md §7.1), made by scripts/gen-clk-vectors.py",
        "filter_layout": "bit i of the filter is bit (i mod 8) of byte i // 8",
        "cases": out,
    }
    return json.dumps(doc, ensure_ascii=False, indent=1) + "\n"


def main() -> int:
    text = build()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is missing or stale; run scripts/gen-clk-vectors.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
