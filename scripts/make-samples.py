#!/usr/bin/env python3
"""Cut the shipped quickstart sample (samples/) from the shared synthetic jp development set.

samples/jp_a.csv   the first 2,000 records of jp_a.csv
samples/jp_b.csv   every jp_b.csv record truly matching one of those, plus 1,000 non-matching
                   jp_b.csv records (deterministic choice), in original order
samples/jp_truth.csv  the true pairs among them

Rows are copied byte for byte, so the corruptions of the source (full-width digits, era
dates, hiragana, swapped names, CRLF line ends) are kept. The data are synthetic persons.
Run from the repository root: python3 scripts/make-samples.py [../shared/data/jp]
"""
import csv
import pathlib
import random
import sys

src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/jp")
out = pathlib.Path("samples")
out.mkdir(exist_ok=True)


def rows(path):
    raw = path.read_bytes().splitlines(keepends=True)
    return raw[0], raw[1:]


a_head, a_rows = rows(src / "jp_a.csv")
b_head, b_rows = rows(src / "jp_b.csv")
a_keep = a_rows[:2000]
a_ids = {r.split(b",", 1)[0].decode() for r in a_keep}
truth = [(x, y) for x, y in csv.reader(open(src / "jp_truth.csv", encoding="utf-8")) if x in a_ids]
b_match = {y for _, y in truth}
b_other = [r.split(b",", 1)[0].decode() for r in b_rows]
b_other = sorted(i for i in b_other if i not in b_match and i not in {y for _, y in csv.reader(open(src / "jp_truth.csv"))})
random.Random(20261122).shuffle(b_other)
b_ids = b_match | set(b_other[:1000])
b_keep = [r for r in b_rows if r.split(b",", 1)[0].decode() in b_ids]

(out / "jp_a.csv").write_bytes(a_head + b"".join(a_keep))
(out / "jp_b.csv").write_bytes(b_head + b"".join(b_keep))
with open(out / "jp_truth.csv", "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["id_a", "id_b"])
    w.writerows(sorted(truth, key=lambda p: int(p[0])))
print(f"samples: {len(a_keep)} A, {len(b_keep)} B, {len(truth)} true pairs")
