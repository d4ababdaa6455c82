"""``umgf-predict``: tag posts (and their images) with a UMGF model from the command line.

    umgf-predict --model my-umgf --text "Kawhi Leonard wins the fan vote" --image tweet.jpg --draw boxes.png
    umgf-predict --model my-umgf --input posts.jsonl --format jsonl --draw drawn/ > entities.jsonl

``--input`` reads JSON lines ``{"text": ..., "image": ..., "grounding": ..., "id": ...}`` (or ``"words"`` instead of
``"text"``; ``--input -`` reads them from stdin; relative image paths are read from the JSONL file's folder, from
the current folder for stdin; ``grounding`` holds precomputed grounding columns, CONTRACT.md), with a progress bar
on stderr. Output: a table (default), JSON lines (the pipeline's full output per post) or CoNLL
(``word<TAB>tag``, a blank line between posts), on stdout or into ``--output FILE``. ``--draw`` saves the image
with the grounded boxes that feed an entity, the post and the scores (`visualization.draw_entities`): a PNG
file with ``--text``, a folder of ``<id>.png`` with ``--input`` (one file per post: ids that would give the same
name get ``-2``, ``-3``...; a file is written beside its name and renamed onto it, so a symbolic link there is
replaced, never followed). Every file written is named on stderr. Images over the pixel budget
(``--max-image-pixels``, `image_utils.MAX_IMAGE_PIXELS`) are refused from their header. ``--grounder`` picks
the grounder instead of the model's own. Bad input gives one line on stderr and exit code 2; a failure while
tagging, 1.

Argument parsing is argparse's; the rest is formatting.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..grounder_registry import GROUNDERS, build_grounder
from ..image_utils import load_rgb_image
from ..pipeline_umgf import MultimodalNERPipeline
from ..precision import PRECISIONS
from ..processing_umgf import Post, read_post
from .loading import load_saved
from .safe_files import unique_file_names, write_replacing


class InputError(ValueError):
    """Bad command-line input (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line instead of usage + message
        raise InputError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="umgf-predict", description="Multimodal named entity recognition with a UMGF model.")
    parser.add_argument("--model", required=True, help="model folder or Hub repo id (model + processor)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="one post")
    source.add_argument(
        "--input",
        type=Path,
        help='JSON lines file ("-": stdin): {"text" or "words", "image", "grounding", "id"}; relative image paths '
        "are read from the file's folder",
    )
    parser.add_argument("--image", help="image of --text (path, http(s) URL or base64)")
    parser.add_argument("--format", choices=("table", "jsonl", "conll"), default="table")
    parser.add_argument("--output", type=Path, help="write the output to this file instead of stdout")
    parser.add_argument(
        "--draw", type=Path, help="draw the grounded boxes of the entities: a PNG file (--text) or a folder (--input)"
    )
    parser.add_argument("--grounder", choices=sorted(GROUNDERS), help="grounder to use instead of the model's own")
    parser.add_argument("--grounder-kwargs", type=json.loads, default={}, help="JSON keyword arguments of --grounder")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--max-image-pixels", type=int, help="refuse larger images (default: UMGF_MAX_IMAGE_PIXELS or 40 megapixels)"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the vision backbone first (model.optimize_for_inference(); costs a compilation, then "
        "faster crops, see BENCHMARKS.md); worth it for large --input files",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="inference precision (default auto: bf16 where the CPU or GPU has bfloat16 units, else fp32; int8: "
        "dynamic quantisation of the linear layers, opt-in; see BENCHMARKS.md for their agreement with fp32)",
    )
    return parser


def read_samples(args: argparse.Namespace) -> list[Post]:
    """The posts to tag, checked and their images decoded (`processing_umgf.read_post`, once per post); errors
    name the file and line."""
    if args.text is not None:
        if not args.text.strip():
            raise InputError("--text is empty")
        samples: list[tuple[str, Any]] = [("--image", {"text": args.text, "image": args.image, "id": "text"})]
    else:
        if args.image is not None:
            raise InputError('--image goes with --text; give images in the --input file ("image" key)')
        stdin = str(args.input) == "-"
        if not stdin and not args.input.is_file():
            raise InputError(f"input file not found: {args.input}")
        samples = []
        name = "<stdin>" if stdin else str(args.input)
        lines = enumerate(sys.stdin, 1) if stdin else utf8_lines(args.input)
        for number, line in lines:
            if not line.strip():
                continue
            where = f"{name}:{number}"
            try:
                sample = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{where}: not valid JSON ({error.msg})") from error
            if isinstance(sample, dict):
                sample = _relative_to(
                    {**sample, "id": str(sample.get("id", where))}, None if stdin else args.input.parent
                )
            samples.append((where, sample))
        if not samples:
            raise InputError(f"{name} holds no posts")
    if args.draw is not None:
        if args.text is not None and (args.image is None or args.draw.is_dir()):
            raise InputError("--draw with --text needs --image and a PNG file path (not a folder)")
        if args.input is not None and args.draw.exists() and not args.draw.is_dir():
            raise InputError(f"--draw with --input needs a folder, but {args.draw} is a file")
    load = functools.partial(load_rgb_image, max_pixels=args.max_image_pixels)
    try:
        return [read_post(sample, where, strict=True, load=load) for where, sample in samples]
    except ValueError as error:
        raise InputError(str(error)) from error


def utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The numbered lines of a UTF-8 text file; a line that is not UTF-8 is an `InputError` naming the file and
    line (a UTF-16 file, for instance, fails on its first line)."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InputError(
                    f"{path}:{number}: not UTF-8 text ({error.reason} at byte {error.start}); save the file as UTF-8"
                ) from None


def grounder_from_args(name: str | None, kwargs: Any) -> Any:
    """The grounder of ``--grounder`` / ``--grounder-kwargs`` (None: the model's own); bad settings are an
    `InputError` naming them."""
    if not isinstance(kwargs, dict):
        raise InputError(f"--grounder-kwargs must be a JSON object, got {json.dumps(kwargs)[:80]}")
    if name is None:
        if kwargs:
            raise InputError("--grounder-kwargs goes with --grounder")
        return None
    try:
        return build_grounder(name, **kwargs)
    except (TypeError, ValueError) as error:
        raise InputError(f"--grounder {name} --grounder-kwargs {json.dumps(kwargs)}: {error}") from error


def _relative_to(sample: dict[str, Any], folder: Path | None) -> dict[str, Any]:
    """``sample`` with a relative image path read from ``folder`` (the JSONL file's folder), when the file is there;
    any other image string (absolute path, URL, base64) is left as it is."""
    image = sample.get("image")
    if folder is None or not isinstance(image, str) or "://" in image or image.startswith("data:"):
        return sample
    try:
        path = Path(image)
        if not path.is_absolute() and (folder / path).is_file():
            return {**sample, "image": str(folder / path)}
    except (OSError, ValueError):  # a long base64 string is no path
        pass
    return sample


def load_pipeline(
    model: str, device: str | None, compile_backbone: bool = False, precision: str = "auto"
) -> MultimodalNERPipeline:
    """The multimodal-ner pipeline of a model folder or Hub repo (with this package's classes, no remote code),
    on ``device`` (default: CUDA when available), at inference ``precision`` (`precision`)."""
    try:
        network, processor = load_saved(model)
    except ValueError as error:
        raise InputError(str(error)) from error
    network.eval()
    if compile_backbone:
        network.optimize_for_inference()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return MultimodalNERPipeline(model=network, processor=processor, device=torch.device(device), precision=precision)


def format_table(post: Post, result: dict[str, Any]) -> str:
    """A readable table of one post's entities: type, text, character span, score, strongest grounded box."""
    rows = [("TYPE", "ENTITY", "CHARS", "SCORE", "TOP BOX (alpha)")]
    for entity in result["entities"]:
        top = entity["boxes"][0] if entity["boxes"] else None
        corners = [round(v) for v in top["box"].values()] if top else []
        box = f"{top['phrase']} {corners} ({top['alpha']:.3f})" if top else "-"
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
    lines = [f"# {post.id}: {result['text']}"]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    if not result["entities"]:
        lines.append("(no entities)")
    return "\n".join(lines)


def format_conll(result: dict[str, Any]) -> str:
    return "\n".join(f"{word['word']}\t{word['tag']}" for word in result["words"]) + "\n"


def run(args: argparse.Namespace) -> int:
    posts = read_samples(args)
    pipe = load_pipeline(args.model, args.device, compile_backbone=args.compile, precision=args.precision)
    grounder = grounder_from_args(args.grounder, args.grounder_kwargs)
    results = tag_posts(pipe, posts, args.batch_size, grounder, progress=args.input is not None)
    out = sys.stdout if args.output is None else args.output.open("w", encoding="utf-8")
    try:
        for post, result in zip(posts, results):
            if args.format == "jsonl":
                print(json.dumps({"id": post.id, **result.to_dict()}, ensure_ascii=False), file=out)
            elif args.format == "conll":
                print(format_conll(result), file=out)
            else:
                print(format_table(post, result) + "\n", file=out)
    finally:
        if out is not sys.stdout:
            out.close()
    if args.output is not None:
        print(f"umgf-predict: wrote {len(results)} posts ({args.format}) to {args.output}", file=sys.stderr)
    if args.draw is not None:
        drawn = [(post.image, str(post.id), result) for post, result in zip(posts, results) if post.image is not None]
        names = unique_file_names([post_id for _, post_id, _ in drawn], ".png")
        for (image, _, result), name in zip(drawn, names):
            path = args.draw if args.text is not None else args.draw / name
            path.parent.mkdir(parents=True, exist_ok=True)
            picture = pipe.draw_entities(image, result["entities"], text=result["text"])
            write_replacing(path, picture.save, format="PNG")
            print(f"umgf-predict: wrote {path}", file=sys.stderr)
    return 0


def tag_posts(
    pipe: MultimodalNERPipeline, posts: Sequence[Post], batch_size: int, grounder: Any, progress: bool
) -> list[Any]:
    """The pipeline's results for ``posts``, in order, with a progress bar over the posts on stderr (``progress``)."""
    results = pipe((post for post in posts), batch_size=batch_size, grounder=grounder)
    bar = tqdm(results, total=len(posts), desc="tagging", unit="post", disable=not progress, file=sys.stderr)
    return list(bar)


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
