"""What the Twitter fixtures under ``fixtures/twitter`` should give, computed independently of datasets_scripts: a
minimal parser and entity counter, the contract's features, the plan of the Twitter-2017 images the tests write, and
an export of the fixture text through ``python -m datasets_scripts build``."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import datasets
import pytest
from PIL import Image

from datasets_scripts import cli

FIXTURES = Path(__file__).parent / "fixtures" / "twitter"
SPLIT_FILES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}
CONTRACT_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
CONTRACT_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "image_id": datasets.Value("string"),
        "tokens": datasets.List(datasets.Value("string")),
        "ner_tags": datasets.List(datasets.ClassLabel(names=CONTRACT_LABELS)),
        "image": datasets.Image(),
        "object_boxes": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
        "object_scores": datasets.List(datasets.Value("float32")),
        "object_phrases": datasets.List(datasets.Value("string")),
        "object_word_start": datasets.List(datasets.Value("int32")),
        "object_word_end": datasets.List(datasets.Value("int32")),
        "grounder": datasets.Value("string"),
    }
)
NO_GROUNDING = {
    "object_boxes": [],
    "object_scores": [],
    "object_phrases": [],
    "object_word_start": [],
    "object_word_end": [],
    "grounder": "",
}
# Twitter-2017 fixture images: what the test writes for each IMGID (absent = no file).
IMAGE_PLAN = {
    "17_01_1": "good",
    "17_01_2": "garbage",
    "17_01_4": "blank",
    "17_02_5": "good",
    "17_02_6": "truncated",
    "O_7": "good",
    "O_8": "good",
}


def parse_fixture(path: Path) -> list[dict]:
    """Independent reading of a well-formed fixture: blocks split on blank lines."""
    blocks = [block for block in path.read_text(encoding="utf-8").split("\n\n") if block.strip()]
    rows = []
    for index, block in enumerate(blocks):
        imgid_line, *token_lines = block.strip("\n").split("\n")
        words, tags = zip(*(line.split("\t") for line in token_lines), strict=True)
        rows.append(
            {
                "id": str(index),
                "image_id": imgid_line.removeprefix("IMGID:"),
                "tokens": list(words),
                "tags": [tag.replace("OTHER", "MISC") for tag in tags],
            }
        )
    return rows


def expected_split(config: str, split: str) -> list[dict]:
    return parse_fixture(FIXTURES / config.removesuffix("c") / SPLIT_FILES[split])


def count_entities(tag_sequences: list[list[str]]) -> tuple[Counter, int]:
    """Count conlleval chunk starts: B-, or I- after O / another type. Returns (per type, started with I-)."""
    per_type: Counter = Counter()
    starting_with_i = 0
    for tags in tag_sequences:
        previous = "O"
        for tag in tags:
            new_type = tag != "O" and (previous == "O" or previous[2:] != tag[2:])
            if tag.startswith("B-") or new_type:
                per_type[tag[2:]] += 1
                starting_with_i += tag.startswith("I-") and new_type
            previous = tag
    return per_type, starting_with_i


def write_image(path: Path, kind: str) -> None:
    if kind == "garbage":
        path.write_bytes(b"this is not an image")
        return
    image = Image.new("RGB", (24, 16), (40, 120, 200))
    if kind != "blank":
        image.putdata([(x * 10, y * 15, (x + y) * 5) for y in range(16) for x in range(24)])
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2] if kind == "truncated" else data)


def expected_image(image_dir: Path | None, image_id: str) -> dict | None:
    if image_dir is None or IMAGE_PLAN.get(image_id) != "good":
        return None
    return {"bytes": (image_dir / f"{image_id}.jpg").read_bytes(), "path": None}


def expected_rows(config: str, split: str, image_dir: Path | None) -> list[dict]:
    rows = []
    for row in expected_split(config, split):
        image = expected_image(image_dir, row["image_id"])
        if config == "twitter2017c" and image is None:
            continue
        rows.append(
            {
                "id": row["id"],
                "image_id": row["image_id"],
                "tokens": row["tokens"],
                "ner_tags": [CONTRACT_LABELS.index(tag) for tag in row["tags"]],
                "image": image,
                **NO_GROUNDING,
            }
        )
    return rows


def undecoded_rows(dataset: datasets.Dataset) -> list[dict]:
    return dataset.cast_column("image", datasets.Image(decode=False)).to_list()


def export_fixture_text(
    out: Path, config: str, *extra: str, monkeypatch: pytest.MonkeyPatch | None = None
) -> list[tuple[Path, str]]:
    """`python -m datasets_scripts build` of one config of the fixture text (no images) into ``out``; with
    ``--push_to_hub`` in ``extra``, the upload is replaced (by ``monkeypatch``) by a record of (folder, repo id)."""
    pushed: list[tuple[Path, str]] = []
    if monkeypatch is not None:
        monkeypatch.setattr(
            cli, "push_folder_to_hub", lambda folder, repo_id, private: pushed.append((folder, repo_id)) or "url"
        )
    cli.main(["build", "--data_dir", str(FIXTURES), "--output_dir", str(out), "--configs", config, *extra])
    return pushed
