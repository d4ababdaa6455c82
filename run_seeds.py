#!/usr/bin/env python
"""One ``train_umgf.py`` run per seed, then the mean ± std of every test evaluation.

    python run_seeds.py --seeds 1 2 3 -- --umt_data_dir ../shared/data --dataset_config_name twitter2017 ...

Everything after ``--`` goes to ``train_umgf.py``; run ``s`` writes to ``<its --output_dir>/seed_<s>``, and the
summary (``runs`` by seed, ``<evaluation>_mean_std``, ``dev_f1``) to ``<--output_dir>/all_results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import train_umgf
from modeling_umgf.tools.metrics import format_table2, mean_std


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, train_argv = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    args = parser.parse_args(ours)
    root = train_umgf.parse_args(train_argv).output_dir
    runs = {
        seed: train_umgf.main([*train_argv, "--seed", str(seed), "--output_dir", str(root / f"seed_{seed}")])
        for seed in args.seeds
    }
    keys = [  # the evaluations (tables of scores), not the flat test_* figures beside them
        key
        for key, value in runs[args.seeds[0]].items()
        if key.startswith(("test", "cross_test")) and isinstance(value, dict)
    ]
    summary = {
        "seeds": args.seeds,
        **{f"{key}_mean_std": mean_std([runs[s][key] for s in args.seeds]) for key in keys},
        "dev_f1": [runs[s]["dev_f1"] for s in args.seeds],
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "all_results.json").write_text(
        json.dumps({"runs": {str(s): r for s, r in runs.items()}, **summary}, indent=2)
    )
    print(f"\nMean ± std over seeds {args.seeds}:")
    print(format_table2({key: summary[f"{key}_mean_std"] for key in keys}))
    return summary


if __name__ == "__main__":
    main()
