#!/usr/bin/env python
"""Is run A better than run B? A paired bootstrap test on two ``predictions_*.jsonl`` files of ``train_umgf.py``.

    python compare_predictions.py RUN_A/predictions_test.jsonl RUN_B/predictions_test.jsonl [--samples 1000]

Both files must cover the same sentences with the same gold tags. Prints (and returns) ``f1_a``, ``f1_b``,
``delta`` and the one-sided ``p_value`` of `modeling_umgf.tools.metrics.paired_bootstrap`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from modeling_umgf.tools.metrics import paired_bootstrap


def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """The records of a predictions file by sentence id; errors name the file and line."""
    records = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                record = json.loads(line)
                records[record["id"]] = record
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise SystemExit(f"{path}:{number}: not a predictions record ({error})") from None
    return records


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", type=Path, help="predictions_*.jsonl of run A")
    parser.add_argument("run_b", type=Path, help="predictions_*.jsonl of run B (same sentences)")
    parser.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    for path in (args.run_a, args.run_b):
        if not path.is_file():
            parser.error(f"no predictions file {path}")
    a, b = read_predictions(args.run_a), read_predictions(args.run_b)
    if set(a) != set(b):
        raise SystemExit(f"the two prediction files cover different sentences ({len(set(a) ^ set(b))} differ)")
    ids = sorted(a)
    if any(a[i]["gold"] != b[i]["gold"] for i in ids):
        raise SystemExit("the two prediction files disagree on the gold tags: not the same test set")
    result = paired_bootstrap(
        [a[i]["gold"] for i in ids],
        [a[i]["pred"] for i in ids],
        [b[i]["pred"] for i in ids],
        samples=args.samples,
        seed=args.seed,
    )
    result.update(run_a=str(args.run_a), run_b=str(args.run_b))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
