"""``umgf-predict``: tag posts (and their images) with a UMGF model from the command line.

    umgf-predict --model my-umgf --text "Kawhi Leonard wins the fan vote" --image tweet.jpg --draw boxes.png
    umgf-predict --model my-umgf --input posts.jsonl --format jsonl > entities.jsonl

``--input`` reads JSON lines ``{"text": ..., "image": ..., "id": ...}`` (or ``"words"`` instead of ``"text"``; image
paths are relative to the current folder). Output: a table (default), JSON lines (the pipeline's full output per
post) or CoNLL (``word<TAB>tag``, a blank line between posts). ``--draw`` saves the image with the grounded
boxes that support an entity, coloured by the type of the entity that attends to them most (highest alpha) and
labelled with the entities. Bad input gives one line on stderr and exit code 2; a failure while tagging, 1.

Argument parsing is argparse's and drawing is Pillow's; the rest is formatting.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw, ImageFont

from .image_utils_umgf import UnreadableImageError, load_rgb_image
from .pipeline_umgf import MultimodalNERPipeline, fetch_image

TYPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "PER": (230, 25, 75),
    "LOC": (60, 180, 75),
    "ORG": (0, 130, 200),
    "MISC": (245, 130, 48),
}
"""Box colour per entity type (other types: grey)."""
OTHER_COLOUR = (128, 128, 128)
BOX_WIDTH = 3


class InputError(ValueError):
    """Bad command-line input (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of argparse's usage + message
        raise InputError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="umgf-predict", description="Multimodal named entity recognition with a UMGF model.")
    parser.add_argument("--model", required=True, help="model folder or Hub repo id (model + processor)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="one post")
    source.add_argument("--input", type=Path, help='JSON lines file: {"text" or "words", "image", "id"} per line')
    parser.add_argument("--image", help="image of --text (path or http(s) URL)")
    parser.add_argument("--format", choices=("table", "jsonl", "conll"), default="table")
    parser.add_argument("--draw", type=Path, help="save the image with grounded boxes and entity labels (PNG)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--compile", action="store_true",
                        help="compile the vision backbone first (model.optimize_for_inference(): about a minute, "
                             "then about 1.1x faster crops on a 2-core CPU); worth it for large --input files")
    return parser


def read_samples(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The posts to tag, checked: non-empty text, readable images; errors name the file and line."""
    if args.text is not None:
        if not args.text.strip():
            raise InputError("--text is empty")
        samples = [{"text": args.text, "image": args.image, "id": "text"}]
    else:
        if args.image is not None:
            raise InputError('--image goes with --text; give images in the --input file ("image" key)')
        if not args.input.is_file():
            raise InputError(f"input file not found: {args.input}")
        samples = []
        with args.input.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                where = f"{args.input}:{number}"
                try:
                    sample = json.loads(line)
                except json.JSONDecodeError as error:
                    raise InputError(f"{where}: not valid JSON ({error.msg})") from error
                if not isinstance(sample, dict) or ("text" in sample) == ("words" in sample):
                    raise InputError(f'{where}: expected an object with "text" or "words"')
                if not (sample.get("text") or "").strip() and not sample.get("words"):
                    raise InputError(f"{where}: empty text")
                samples.append({**sample, "id": str(sample.get("id", where))})
        if not samples:
            raise InputError(f"{args.input} holds no posts")
    if args.draw is not None and (args.text is None or args.image is None):
        raise InputError("--draw needs --text and --image")
    for sample in samples:
        if sample.get("image") is not None:
            try:
                sample["image"] = load_rgb_image(fetch_image(sample["image"]))
            except (UnreadableImageError, ValueError) as error:
                raise InputError(f"post {sample['id']}: cannot read image {sample['image']}: {error}") from error
    return samples


def load_pipeline(model: str, device: str | None, compile_backbone: bool = False) -> MultimodalNERPipeline:
    """The multimodal-ner pipeline of a model folder or Hub repo (with this package's classes, no remote code)."""
    from .modeling_umgf import UMGFForTokenClassification
    from .processing_umgf import UMGFProcessor

    path = Path(model).expanduser()
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        if not (path / "config.json").is_file():
            raise InputError(f"model folder not found (no config.json): {model}")
        model = str(path)
    try:
        processor = UMGFProcessor.from_pretrained(model)
        network = UMGFForTokenClassification.from_pretrained(model).eval()
    except OSError as error:
        raise InputError(f"cannot load model {model}: {str(error).splitlines()[0]}") from error
    if compile_backbone:
        network.optimize_for_inference()
    return MultimodalNERPipeline(model=network, processor=processor, device=device if device is not None else -1)


def format_table(sample: dict[str, Any], result: dict[str, Any]) -> str:
    """A readable table of one post's entities: type, text, character span, score, strongest grounded box."""
    rows = [("TYPE", "ENTITY", "CHARS", "SCORE", "TOP BOX (alpha)")]
    for entity in result["entities"]:
        top = entity["boxes"][0] if entity["boxes"] else None
        box = f"{top['phrase']} {[round(v) for v in top['box']]} ({top['alpha']:.3f})" if top else "-"
        rows.append(
            (
                entity["entity_group"],
                entity["word"],
                f"{entity['start']}-{entity['end']}",
                f"{entity['score']:.3f}",
                box,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"# {sample['id']}: {result['text']}"]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    if not result["entities"]:
        lines.append("(no entities)")
    return "\n".join(lines)


def format_conll(result: dict[str, Any]) -> str:
    return "\n".join(f"{word['word']}\t{word['tag']}" for word in result["words"]) + "\n"


def draw_entities(image: Image.Image, entities: Sequence[dict[str, Any]]) -> Image.Image:
    """A copy of ``image`` with every grounded box that supports an entity outlined in the colour of the entity
    type attending to it most (highest alpha) and labelled ``TYPE entity (alpha)`` for each entity it supports."""
    supports: dict[tuple[float, ...], list[tuple[float, dict[str, Any]]]] = {}
    for entity in entities:
        for box in entity["boxes"]:
            supports.setdefault(tuple(box["box"]), []).append((box["alpha"], entity))
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    labels = []
    for box, linked in supports.items():
        linked.sort(key=lambda pair: -pair[0])
        colour = TYPE_COLOURS.get(linked[0][1]["entity_group"], OTHER_COLOUR)
        x0, y0, x1, y1 = (round(v) for v in box)
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=BOX_WIDTH)
        text = "; ".join(f"{e['entity_group']} {e['word']} ({alpha:.2f})" for alpha, e in linked)
        room = x1 - x0 - 2 * BOX_WIDTH
        while len(text) > 1 and draw.textlength(text, font=font) > room:  # cut the label to the box's width
            text = text[:-2] + "…"
        labels.append(((x0 + BOX_WIDTH, y0 + BOX_WIDTH), text, colour))
    for position, text, colour in labels:  # labels last, so that no box outline crosses them
        draw.rectangle(draw.textbbox(position, text, font=font), fill=colour)
        draw.text(position, text, fill=(255, 255, 255), font=font)
    return canvas


def run(args: argparse.Namespace) -> int:
    samples = read_samples(args)
    pipe = load_pipeline(args.model, args.device, compile_backbone=args.compile)
    inputs = [
        {key: sample[key] for key in ("text", "words", "image", "grounding") if key in sample} for sample in samples
    ]
    results = pipe(inputs, batch_size=args.batch_size, return_words=True)
    for sample, result in zip(samples, results):
        if args.format == "jsonl":
            print(json.dumps({"id": sample["id"], **result}, ensure_ascii=False))
        elif args.format == "conll":
            print(format_conll(result))
        else:
            print(format_table(sample, result) + "\n")
    if args.draw is not None:
        args.draw.parent.mkdir(parents=True, exist_ok=True)
        draw_entities(samples[0]["image"], results[0]["entities"]).save(args.draw)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``umgf-predict``; returns the exit code."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        return run(build_parser().parse_args(argv))
    except InputError as error:
        print(f"umgf-predict: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, OSError) as error:
        print(
            f"umgf-predict: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
