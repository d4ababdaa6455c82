"""The UMGF authors' data, scoring and initialisation: their my_data/ layout as dataset configs, their metric, their
word handling at evaluation, their xavier bounds."""

from __future__ import annotations

import math
from pathlib import Path

import datasets
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics import classification_report

from datasets_scripts.authors_format import (
    authors_split_scores,
    drop_empty_words,
    scored_word_counts,
    tweet_numbers,
)
from datasets_scripts.twitter_mner import TwitterMNER, build_dataset
from datasets_scripts.umt_format import TwitterFormatError
from modeling_umgf import UMGFConfig, UMGFForTokenClassification
from modeling_umgf.schema import dataset_features
from modeling_umgf.tools.metrics import authors_chunks, authors_entity_scores
from modeling_umgf.tools.tiny_models import tiny_encoders, tiny_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "twitter"
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]


# ------------------------------------------------------------------------------------------------------ the metric
def test_their_chunks_written_out() -> None:
    tags = ["I-PER", "I-PER", "B-PER", "I-LOC", "O", "B-ORG", "I-ORG", "B-ORG", "O", "I-MISC"]
    assert authors_chunks(tags) == {
        ("PER", 0, 2),  # an I- start opens an entity
        ("PER", 2, 3),  # a B- closes the one before
        ("LOC", 3, 4),  # a change of type too
        ("ORG", 5, 7),
        ("ORG", 7, 8),
        ("MISC", 9, 10),  # open at the end
    }


def test_sentences_are_scored_as_one_sequence() -> None:
    """An entity at a tweet's end runs into an I- tag of the same type at the next tweet's start (one entity for
    them, two for seqeval); the scores written out by hand."""
    gold = [["O", "B-PER"], ["I-PER", "O", "B-LOC"]]
    pred = [["O", "B-PER"], ["B-PER", "O", "B-LOC"]]
    # gold: PER(1, 3), LOC(4, 5); pred: PER(1, 2), PER(2, 3), LOC(4, 5): 1 correct of 3 predicted, 2 gold
    scores = authors_entity_scores(gold, pred)
    assert scores["precision"] == pytest.approx(1 / 3) and scores["recall"] == pytest.approx(1 / 2)
    assert scores["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert scores["accuracy"] == pytest.approx(4 / 5)
    assert scores["per_type"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert scores["per_type"]["LOC"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    seqeval = classification_report(gold, pred, output_dict=True, zero_division=0)["micro avg"]
    assert seqeval["f1-score"] != pytest.approx(scores["f1"])  # where the two scorings part


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(TAGS), st.sampled_from(TAGS)), min_size=1, max_size=10), min_size=1))
def test_on_one_sequence_it_is_seqeval(sentences) -> None:
    """seqeval's default mode chunks B-/I-/O the same way: on the concatenated sequence they agree."""
    gold = [[g for g, _ in sentence] for sentence in sentences]
    pred = [[p for _, p in sentence] for sentence in sentences]
    ours = authors_entity_scores(gold, pred)
    flat_gold, flat_pred = [[t for s in gold for t in s]], [[t for s in pred for t in s]]
    report = classification_report(flat_gold, flat_pred, output_dict=True, zero_division=0)
    assert ours["f1"] == pytest.approx(report["micro avg"]["f1-score"])
    assert ours["precision"] == pytest.approx(report["micro avg"]["precision"])
    assert ours["support"] == report["micro avg"]["support"]
    for entity_type in ("PER", "LOC", "ORG", "MISC"):
        row = report.get(entity_type, {"f1-score": 0.0, "support": 0})
        assert ours["per_type"][entity_type]["f1"] == pytest.approx(row["f1-score"])
        assert ours["per_type"][entity_type]["support"] == row["support"]


def test_nothing_correct_scores_zero() -> None:
    scores = authors_entity_scores([["B-PER", "O"]], [["O", "B-LOC"]])
    assert (scores["precision"], scores["recall"], scores["f1"]) == (0.0, 0.0, 0.0)


# ---------------------------------------------------------------------------------------------------- their layout
def write_tweet(folder: Path, number: str, words: list[str], tags: list[str], image_id: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{number}_s.txt").write_text("\t".join(words), encoding="utf-8")
    (folder / f"{number}_l.txt").write_text("\t".join(tags), encoding="utf-8")
    (folder / f"{number}_p.txt").write_text(image_id, encoding="utf-8")


def my_data(root: Path, numbers=("0", "1", "2", "10", "100", "1000", "11")) -> Path:
    for split in ("train", "valid", "test"):
        for number in numbers:
            words = [f"w{number}", split, "Kohl"]
            write_tweet(root / "twitter2015" / split, number, words, ["O", "O", "B-OTHER"], f"9{number}")
    return root


def test_tweets_are_read_in_their_sorted_file_name_order(tmp_path: Path) -> None:
    root = my_data(tmp_path)
    folder = root / "twitter2015" / "test"
    paths = sorted(str(p) for p in folder.glob("*_s.txt"))  # what their dataset does
    expected = [Path(p).name.split("_")[0] for p in paths]
    assert expected == ["0", "1000", "100", "10", "11", "1", "2"]  # "_" sorts after the digits
    assert tweet_numbers(folder) == expected


def test_authors_configs_have_the_umt_features_and_their_text(tmp_path: Path) -> None:
    root = my_data(tmp_path / "my_data")
    built, _ = build_dataset("twitter2015_authors", data_dir=root, cache_dir=tmp_path / "cache")
    assert set(built) == {"train", "validation", "test"}
    test = built["test"]
    assert test.features == dataset_features()
    assert test["id"] == ["0", "1000", "100", "10", "11", "1", "2"]
    assert test["image_id"][:3] == ["90", "91000", "9100"]
    names = test.features["ner_tags"].feature.names
    assert [names[t] for t in test["ner_tags"][0]] == ["O", "O", "B-MISC"]
    assert test["tokens"][3] == ["w10", "test", "Kohl"]
    assert built["validation"]["tokens"][0][1] == "valid"
    assert {c.name for c in TwitterMNER.BUILDER_CONFIGS} >= {"twitter2015_authors", "twitter2017_authors"}


@pytest.mark.parametrize(
    "damage, file, line, reason",
    [
        (lambda f: (f / "1_l.txt").unlink(), "1_l.txt", None, "missing"),
        (lambda f: (f / "1_l.txt").write_text("O\tO"), "1_l.txt", 1, "2 tags for the 3 words"),
        (lambda f: (f / "1_l.txt").write_text("O\tO\tB-FOO"), "1_l.txt", 1, "tag 3 'B-FOO' unknown"),
        (lambda f: (f / "1_s.txt").write_text("a\t\tb"), "1_s.txt", 1, "word 2 is empty"),
        (lambda f: (f / "1_s.txt").write_text("a\tb\tc\nd\te\tf"), "1_s.txt", 2, "a second line"),
        (lambda f: (f / "1_p.txt").write_text("../x"), "1_p.txt", 1, "not a plain file name"),
    ],
)
def test_a_broken_tweet_names_its_file_and_line(tmp_path: Path, damage, file, line, reason) -> None:
    root = my_data(tmp_path / "my_data")
    damage(root / "twitter2015" / "train")
    with pytest.raises(TwitterFormatError) as error:
        build_dataset("twitter2015_authors", data_dir=root, cache_dir=tmp_path / "cache")
    assert Path(error.value.path).name == file and error.value.line == line and reason in error.value.reason


def test_a_missing_split_folder_is_named(tmp_path: Path) -> None:
    root = my_data(tmp_path / "my_data")
    for entry in (root / "twitter2015" / "valid").iterdir():
        entry.unlink()
    (root / "twitter2015" / "valid").rmdir()
    with pytest.raises(FileNotFoundError, match=r"twitter2015/valid not found"):
        build_dataset("twitter2015_authors", data_dir=root, cache_dir=tmp_path / "cache")


def test_without_a_folder_their_repository_archive_is_downloaded(tmp_path: Path, monkeypatch) -> None:
    asked = []

    def fake(self, url):
        asked.append(url)
        root = tmp_path / "extracted"
        my_data(root / f"UMGF-{url.rsplit('/', 1)[1].removesuffix('.tar.gz')}" / "my_data")
        return str(root)

    monkeypatch.setattr(datasets.DownloadManager, "download_and_extract", fake)
    built, _ = build_dataset("twitter2015_authors", cache_dir=tmp_path / "cache")
    assert asked and asked[0].startswith("https://github.com/TransformersWsz/UMGF/archive/")
    assert built["test"]["id"][:3] == ["0", "1000", "100"]


# ------------------------------------------------------------------------------------------- their word handling
def test_words_without_sub_tokens_go_with_their_tags() -> None:
    tokenizer = tiny_tokenizer()
    rows = datasets.Dataset.from_dict(
        {
            "id": ["a", "b", "c"],
            "tokens": [["Photo", "\u200b", "of"], ["\u200b", "gate"], ["\ufeff"]],
            "ner_tags": [[0, 1, 2], [3, 4], [1]],
        }
    )
    kept, report = drop_empty_words(rows, tokenizer)
    assert kept["tokens"] == [["Photo", "of"], ["gate"]] and kept["ner_tags"] == [[0, 2], [4]]
    assert report.removed == [("a", 1, "\u200b"), ("b", 0, "\u200b"), ("c", 0, "\ufeff")]
    assert report.empty_tweets == ["c"] and kept["id"] == ["a", "b"]


def test_truncated_words_are_left_out_of_their_scores() -> None:
    tokenizer = tiny_tokenizer()
    words = ["Photo", "Kohl", "of", "the", "gate"]  # "Kohl" is two pieces (Ko ##hl)
    pieces = [len(tokenizer.tokenize(w)) for w in words]
    max_length = 5  # [CLS] + 3 pieces + [SEP]: Photo, Ko, ##hl
    first_pieces = [1 + sum(pieces[:i]) for i in range(len(words))]  # position of each word's first piece
    expected = sum(position < max_length - 1 for position in first_pieces)
    assert scored_word_counts(tokenizer, [words], max_length) == [expected] == [2]
    gold = [["B-PER", "I-PER", "O", "O", "B-LOC"]]
    pred = [["B-PER", "I-PER", "O", "O", "O"]]  # the missed LOC is cut: not scored
    scores = authors_split_scores([words], gold, pred, tokenizer, max_length)
    assert scores["f1"] == 1.0 and scores["support"] == 1


# -------------------------------------------------------------------------------------------- their initialisation
def test_xavier_bounds_are_theirs_per_map() -> None:
    """Each of q, k, v is a d -> d map (bound sqrt(6 / 2d)); each gate half is half of a 2d -> d map
    (bound sqrt(6 / 3d)); the FFN keeps its own shape's bound."""
    d = 64
    config = UMGFConfig.from_preset(
        "release",
        **tiny_encoders(),
        hidden_size=d,
        intermediate_size=32,
        num_fusion_layers=1,
        num_attention_heads=2,
    )
    torch.manual_seed(0)
    layer = UMGFForTokenClassification(config).umgf.layers[0]
    cases = {
        "text q/k/v": (layer.text.attention.qkv.weight, math.sqrt(6 / (2 * d))),
        "object q/k": (layer.visual.attention.qkv.weight, math.sqrt(6 / (2 * d))),
        "text gate, own half": (layer.text.gate.w_self.weight, math.sqrt(6 / (3 * d))),
        "text gate, other half": (layer.text.gate.w_other.weight, math.sqrt(6 / (3 * d))),
        "object gate, own half": (layer.visual.gate.w_self.weight, math.sqrt(6 / (3 * d))),
        "ffn in": (layer.text.ffn.fc1.weight, math.sqrt(6 / (d + 32))),
    }
    for name, (weight, bound) in cases.items():
        # uniform(-b, b): the largest of thousands of draws is within 2 % of b, and none beyond it
        assert weight.abs().max().item() <= bound, name
        assert weight.abs().max().item() > 0.98 * bound, name
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05), name
    assert not layer.text.gate.w_self.bias.any()
