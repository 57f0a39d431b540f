"""Split a question set once, by a fixed seed, into a tuning half and a test half.

    .venv/bin/python scripts/split_questions.py eval/people.jsonl [--seed 24]

Writes NAME-tune.jsonl and NAME-test.jsonl beside it (never over existing ones: a new split
would put tuned-on questions into the test half) and removes nothing. The split is
stratified by ``kind``: each kind's questions are shuffled with the seed and dealt
alternately, so both halves hold every kind (the odd one out goes to the test half).
Tune only on the first half; report the second.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path


def split(lines: list[dict], seed: int) -> tuple[list[dict], list[dict]]:
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for obj in lines:
        by_kind[obj.get("kind") or "other"].append(obj)
    tune, test = [], []
    rng = random.Random(seed)
    for kind in sorted(by_kind):
        group = by_kind[kind]
        rng.shuffle(group)
        test += group[0::2]
        tune += group[1::2]
    order = {id(o): n for n, o in enumerate(lines)}
    return sorted(tune, key=lambda o: order[id(o)]), sorted(test, key=lambda o: order[id(o)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--seed", type=int, default=24)
    a = ap.parse_args()
    path = Path(a.file)
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    outs = [path.with_name(f"{path.stem}-{name}.jsonl") for name in ("tune", "test")]
    if any(o.exists() for o in outs):
        sys.exit(f"split_questions: {outs[0].name} or {outs[1].name} exists; the split is made once")
    for half, out in zip(split(lines, a.seed), outs):
        out.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in half), encoding="utf-8")
        print(f"{out}: {len(half)} questions")


if __name__ == "__main__":
    main()
