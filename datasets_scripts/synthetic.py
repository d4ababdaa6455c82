"""A synthetic multimodal NER task, generated on the fly, where only the image tells some entity types.

Sentences are made up from neutral templates ("look at {} today !") filled with made-up names. Every image
(96 x 64, drawn with PIL) shows one coloured symbol per entity mention of its sentence, left to right in the order
of the mentions (each in its own third of the width):

    PER: red disc     LOC: green triangle     ORG: blue square     MISC: yellow diamond

The grounding columns hold where each symbol was drawn (grounder ``"synthetic"``: the exact, gold grounding). A
model does not need it: the ``"symbols"`` grounder (`modeling_umgf.symbol_grounding`) finds the symbols in the
pixels of any such image and links them to the sentence's phrases, as a detector does for a real post, and the main
job's processor uses it in training and at inference.

Two kinds of names:

* *typed names* carry their type in a suffix word piece ("kal##son" is a person, "dor##burg" a location,
  "mip##corp" an organisation, "tas##fest" a misc entity): the text alone tells the type;
* *ambiguous names* ("zorvan", "pelu", ...) get a random type in every sentence: only the symbol drawn in the
  image tells which.

A fraction of the sentences have no image (like tweets whose image is missing) and no grounding, so a model
trained on the task also sees the text-only regime. Without the image a model can only guess the type of an
ambiguous name (one chance in four); with it the type can be read off the symbol, so F1 with images should be
clearly higher than without.

The vocabulary (`vocabulary`) holds every template word, name stem and ``##`` suffix, so the BERT WordPiece
tokenizer built from it (`build_tokenizer`) splits typed names into two sub-tokens and never needs [UNK].
Hand-written because the task is ours. The columns and `datasets` features are every umgf dataset's
(`modeling_umgf.schema.dataset_features`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import datasets
from PIL import Image, ImageDraw

from modeling_umgf.configuration_umgf import Preset, TrainingRecipe
from modeling_umgf.schema import ENTITY_TYPES

from .twitter_mner import FEATURES

IMAGE_WIDTH, IMAGE_HEIGHT = 96, 64
SLOTS = 3  # a mention's symbol is drawn in its own slot (a third of the width), slots in mention order
SYMBOL_SIDES = (14, 26)
GROUNDER = "synthetic"
SYMBOL_COLOURS: dict[str, tuple[int, int, int]] = {
    "PER": (220, 40, 40),
    "LOC": (40, 170, 60),
    "ORG": (40, 70, 220),
    "MISC": (230, 200, 30),
}
TYPE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "PER": ("son", "ia"),
    "LOC": ("burg", "ville"),
    "ORG": ("corp", "tech"),
    "MISC": ("fest", "con"),
}
NAME_STEMS: tuple[str, ...] = ("kal", "dor", "mip", "tas", "ren", "vol", "bru", "hem", "lan", "sor", "fin", "gat")
AMBIGUOUS_NAMES: tuple[str, ...] = ("zorvan", "pelu", "quimby", "nadri", "olbek", "wexa", "trimo", "yasko")
TEMPLATES: tuple[str, ...] = (
    "look at {} today !",
    "{} is all over my feed",
    "so much news about {} and {}",
    "can not stop thinking about {}",
    "{} again , what a day",
    "photo of {} from last night",
    "rt : {} and {} trending now",
    "nothing beats {} on a sunday",
    "first time seeing {} like this",
    "here is {} with {} and {}",
    "why is everyone talking about {}",
    "just saw {}",
)
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def function_words() -> list[str]:
    """The words of the templates: everything in a sentence that is not part of a name."""
    return sorted({word for template in TEMPLATES for word in template.split() if word != "{}"})


def vocabulary() -> list[str]:
    """Every word piece of the task: special tokens, template words, name stems, ``##`` suffixes, ambiguous names."""
    words = function_words()
    suffixes = sorted({f"##{s}" for group in TYPE_SUFFIXES.values() for s in group})
    return [*SPECIAL_TOKENS, *words, *NAME_STEMS, *suffixes, *AMBIGUOUS_NAMES]


def build_tokenizer(save_directory: str | os.PathLike | None = None, model_max_length: int | None = None):
    """A lower-casing BERT WordPiece tokenizer over `vocabulary` (built offline, nothing downloaded);
    ``model_max_length``: the text encoder's positions (what the tokenizer truncates to)."""
    from transformers import BertTokenizer  # the fast (tokenizers) one in transformers 5

    tokenizer = BertTokenizer(vocab={piece: i for i, piece in enumerate(vocabulary())}, do_lower_case=True)
    if model_max_length is not None:
        tokenizer.model_max_length = model_max_length
    if save_directory is not None:
        tokenizer.save_pretrained(save_directory)
    return tokenizer


@dataclass
class SyntheticMNERConfig:
    """Sizes and difficulty of the synthetic task.

    Attributes:
        train_size, validation_size, test_size: sentences per split.
        ambiguous_fraction: probability that an entity mention uses ambiguous names (only the image tells).
        image_fraction: probability that a sentence has an image (and so a grounding).
        two_word_fraction: probability that a mention has two words (B- I-).
        seed: random seed; the same config always gives the same dataset.
    """

    train_size: int = 1200
    validation_size: int = 200
    test_size: int = 300
    ambiguous_fraction: float = 0.5
    image_fraction: float = 0.85
    two_word_fraction: float = 0.3
    seed: int = 0


@dataclass(frozen=True)
class SyntheticJob(Preset):
    """The synthetic main job of train_umgf.py, laid over the chosen preset: the paper's architecture at toy size
    with encoders trained from scratch, the task's own grounder and crop transform, and a recipe for encoders from
    scratch (a higher lr, more epochs, a frozen and cached backbone).

    A word is read as the mean of its sub-token nodes: an encoder trained from scratch does not yet carry what "##son"
    says onto the first sub-token of "kal##son" (reading the first sub-token, the model learns no text cue;
    BENCHMARKS.md). The task's symbol images replace the preset's "detector" and "release" grounders (`grounder_for`).

    Attributes:
        text_config: the `BertConfig` fields of its text encoder (the vocabulary is `build_tokenizer`'s).
        crop_size: side of the object crops.
    """

    config: Mapping[str, Any] = field(
        default_factory=lambda: {
            "vision_backbone": "test_resnet",
            "vision_feature_dim": 96,
            "hidden_size": 64,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "dropout": 0.1,
            "word_readout": "mean",
        }
    )
    grounder: str = "symbols"
    training: TrainingRecipe = field(
        default_factory=lambda: TrainingRecipe(learning_rate=2e-3, num_train_epochs=10, freeze_vision_backbone=True)
    )
    text_config: Mapping[str, Any] = field(
        default_factory=lambda: {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 128,
            "max_position_embeddings": 64,
        }
    )
    crop_size: int = 32

    def grounder_for(self, grounder: str) -> str:
        """The grounder of the task's images for a preset's (or --grounder's) ``grounder``: its own symbol grounder
        instead of a detector or the authors' type-word boxes; grid cells as they are."""
        return self.grounder if grounder in ("detector", "release") else grounder


#: The synthetic main job.
SYNTHETIC_JOB = SyntheticJob()


def _mention(rng: random.Random, config: SyntheticMNERConfig) -> tuple[str, list[str]]:
    """An entity mention: its type and its words."""
    entity_type = rng.choice(ENTITY_TYPES)
    length = 2 if rng.random() < config.two_word_fraction else 1
    if rng.random() < config.ambiguous_fraction:
        return entity_type, rng.sample(AMBIGUOUS_NAMES, length)
    return entity_type, [rng.choice(NAME_STEMS) + rng.choice(TYPE_SUFFIXES[entity_type]) for _ in range(length)]


def _draw_symbol(
    draw: ImageDraw.ImageDraw, entity_type: str, box: tuple[int, int, int, int], rng: random.Random
) -> None:
    x0, y0, x1, y1 = box
    colour = tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in SYMBOL_COLOURS[entity_type])
    if entity_type == "PER":
        draw.ellipse(box, fill=colour)
    elif entity_type == "LOC":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)
    elif entity_type == "ORG":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, (y0 + y1) / 2), ((x0 + x1) / 2, y1), (x0, (y0 + y1) / 2)], fill=colour)


def _example(index: int, split: str, rng: random.Random, config: SyntheticMNERConfig) -> dict[str, Any]:
    template = rng.choice(TEMPLATES)
    tokens: list[str] = []
    tags: list[str] = []
    mentions: list[tuple[str, int, int]] = []  # (type, word start, word end)
    for part_index, part in enumerate(template.split("{}")):
        if part_index:
            entity_type, words = _mention(rng, config)
            mentions.append((entity_type, len(tokens), len(tokens) + len(words)))
            tokens += words
            tags += [f"B-{entity_type}"] + [f"I-{entity_type}"] * (len(words) - 1)
        words = part.split()
        tokens += words
        tags += ["O"] * len(words)

    grounding: dict[str, list[Any]] = {key: [] for key in FEATURES if key.startswith("object_")}
    image = None
    if rng.random() < config.image_fraction:
        image = Image.new("RGB", (IMAGE_WIDTH, IMAGE_HEIGHT), tuple(rng.randint(200, 255) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        slot_width = IMAGE_WIDTH // SLOTS
        slots = sorted(rng.sample(range(SLOTS), len(mentions)))  # left to right in mention order
        for (entity_type, start, end), slot in zip(mentions, slots):
            side = rng.randint(*SYMBOL_SIDES)
            # inside the slot with a pixel to spare on each side, so that neighbouring symbols never touch
            x0 = rng.randint(slot * slot_width + 1, (slot + 1) * slot_width - 1 - side)
            y0 = rng.randint(0, IMAGE_HEIGHT - side)
            _draw_symbol(draw, entity_type, (x0, y0, x0 + side - 1, y0 + side - 1), rng)
            grounding["object_boxes"].append([float(x0), float(y0), float(x0 + side), float(y0 + side)])
            grounding["object_scores"].append(1.0)
            grounding["object_phrases"].append(" ".join(tokens[start:end]))
            grounding["object_word_start"].append(start)
            grounding["object_word_end"].append(end)
    return {
        "id": f"{split}-{index}",
        "image_id": f"{split}-{index}" if image is not None else "",
        "tokens": tokens,
        "ner_tags": tags,
        "image": image,
        **grounding,
        "grounder": GROUNDER if image is not None else "",
    }


def build_synthetic_dataset(config: SyntheticMNERConfig | None = None) -> datasets.DatasetDict:
    """Generate the train / validation / test splits (CONTRACT.md columns; deterministic for a given seed)."""
    config = config or SyntheticMNERConfig()
    sizes = {"train": config.train_size, "validation": config.validation_size, "test": config.test_size}
    splits = {}
    for offset, (split, size) in enumerate(sizes.items()):
        rng = random.Random(config.seed * 1000 + offset)
        rows = [_example(index, split, rng, config) for index in range(size)]
        columns = {name: [row[name] for row in rows] for name in FEATURES}  # also right for an empty split
        splits[split] = datasets.Dataset.from_dict(columns, features=FEATURES)
    return datasets.DatasetDict(splits)


__all__ = [
    "FEATURES",
    "SyntheticMNERConfig",
    "build_synthetic_dataset",
    "build_tokenizer",
    "function_words",
    "vocabulary",
]
