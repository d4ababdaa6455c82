"""The "release" preset is the authors' network: their checkpoints convert, load and compute what theirs compute
(checked against `release_reference`, an independent implementation), and their released crops are read right."""

from __future__ import annotations

import copy
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from release_reference import TAGS, ReferenceRelease
from transformers import AutoModelForTokenClassification, AutoProcessor, pipeline

from datasets_scripts.release_crops import CROP_FILES, attach_release_crops, crop_paths
from modeling_umgf import LABELS, UMGFConfig, UMGFForTokenClassification
from modeling_umgf.schema import dataset_features, empty_grounding
from modeling_umgf.tools.convert_original_checkpoint import convert, main
from modeling_umgf.tools.tiny_models import VOCAB, tiny_bert_config, tiny_tokenizer

BERT = tiny_bert_config(vocab_size=len(VOCAB))
# three tweets: (sub-tokens of each word, their word tags); lengths differ, some words have several pieces
TWEETS = [
    ([[9], [10], [11, 12, 13], [14]], ["O", "O", "B-PER", "O"]),
    ([[21], [22, 23], [24], [25], [26], [27]], ["B-OTHER", "I-OTHER", "B-LOC", "O", "B-ORG", "I-ORG"]),
    ([[19], [20]], ["B-LOC", "O"]),
]
OBJECTS = 4


def reference_model(seed: int = 0) -> ReferenceRelease:
    torch.manual_seed(seed)
    model = ReferenceRelease(BERT).eval()
    with torch.no_grad():  # non-trivial normalisation statistics and affine maps
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[ReferenceRelease, Path]:
    """The reference's state dict saved the authors' way (with BERT's pooler and transformers 3.x's position-id
    buffer), converted by the command line into a folder with a processor."""
    tmp = tmp_path_factory.mktemp("release")
    reference = reference_model()
    state = reference.state_dict()
    state["bert.embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    torch.save(state, tmp / "ddp_mner.pt")
    text_model = tmp / "bert"
    BERT.save_pretrained(text_model)
    tiny_tokenizer().save_pretrained(text_model)
    code = main(
        [
            "--checkpoint",
            str(tmp / "ddp_mner.pt"),
            "--output_dir",
            str(tmp / "converted"),
            "--text_model_name_or_path",
            str(text_model),
            "--vision_backbone",
            "test_resnet",
            "--dataset",
            "twitter2015",
        ]
    )
    assert code == 0
    return reference, tmp / "converted"


def batch_of(tweets, pad_to: int | None) -> dict:
    """Their dataset's inputs ([CLS] pieces [SEP], CLS / X / SEP tags, every real token linked to every crop) and
    ours (word ids, word-level labels) for the same tweets."""
    rows = []
    for pieces, tags in tweets:
        ids, token_tags, word_ids = [2], ["CLS"], [-1]
        for w, (word, tag) in enumerate(zip(pieces, tags)):
            ids += word
            token_tags += [tag] + ["X"] * (len(word) - 1)
            word_ids += [w] * len(word)
        rows.append((ids + [3], token_tags + ["SEP"], word_ids + [-1], tags))
    length = pad_to or max(len(r[0]) for r in rows)
    words = max(len(r[3]) for r in rows)
    out = {
        "input_ids": torch.zeros(len(rows), length, dtype=torch.long),
        "attention_mask": torch.zeros(len(rows), length, dtype=torch.long),
        "word_ids": torch.full((len(rows), length), -1),
        "labels": torch.full((len(rows), words), -100),
        "token_tags": [[TAGS.index(t) for t in r[1]] for r in rows],
    }
    for b, (ids, _, word_ids, tags) in enumerate(rows):
        out["input_ids"][b, : len(ids)] = torch.tensor(ids)
        out["attention_mask"][b, : len(ids)] = 1
        out["word_ids"][b, : len(ids)] = torch.tensor(word_ids)
        out["labels"][b, : len(tags)] = torch.tensor([LABELS.index(t.replace("OTHER", "MISC")) for t in tags])
    out["matrix"] = out["attention_mask"].float().unsqueeze(-1).expand(-1, -1, OBJECTS).contiguous()
    out["pixel_values"] = torch.randn(len(rows), OBJECTS, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    return out


@pytest.mark.parametrize("pad_to", [24, None])
def test_converted_checkpoint_computes_what_the_authors_network_computes(converted, pad_to) -> None:
    reference, folder = converted
    model = AutoModelForTokenClassification.from_pretrained(folder, trust_remote_code=True).eval()
    x = batch_of(TWEETS, pad_to)
    # our processor links the four general-word crops to every word, not to [CLS] / [SEP]: the model adds those
    words_only = x["matrix"] * (x["word_ids"] >= 0).unsqueeze(-1)
    inputs = dict(
        input_ids=x["input_ids"],
        attention_mask=x["attention_mask"],
        word_ids=x["word_ids"],
        pixel_values=x["pixel_values"],
        inter_modal_adjacency=words_only,
    )
    with torch.no_grad():
        expected = reference.emissions(x["input_ids"], x["attention_mask"], x["pixel_values"], x["matrix"])
        out = model(**inputs, labels=x["labels"])
        predictions = model(**inputs).predictions
    real = x["attention_mask"].bool()
    assert out.logits.shape == (3, x["input_ids"].shape[1], len(TAGS))  # sub-token emissions
    torch.testing.assert_close(out.logits[real], expected[real], rtol=0, atol=1e-5)
    # the loss: their pytorch-crf negative log-likelihood over sub-tokens, summed over the batch
    assert float(out.loss) == pytest.approx(reference.negative_log_likelihood(expected, x["token_tags"]), abs=1e-4)
    # predictions: their Viterbi path read at each word's first sub-token, X / CLS / SEP / PAD as O, OTHER as MISC
    for b, (pieces, _) in enumerate(TWEETS):
        path = reference.viterbi(expected[b], int(real[b].sum()))
        firsts = np.cumsum([1] + [len(p) for p in pieces])[:-1]
        read = [TAGS[path[f]] for f in firsts]
        read = ["O" if t in ("PAD", "X", "CLS", "SEP") else t.replace("OTHER", "MISC") for t in read]
        assert [LABELS[int(t)] for t in predictions[b] if t != -100] == read


def test_a_training_step_of_the_backbone_computes_as_the_authors(converted) -> None:
    """In train mode (batch norm on batch statistics) the converted model's backbone gives their features and
    gradients bit for bit: the crops go in as their ``resnet(b_img)`` takes them (NCHW), not channels-last."""
    reference, folder = converted
    theirs = copy.deepcopy(reference).train()
    model = UMGFForTokenClassification.from_pretrained(folder).train()
    crops = batch_of(TWEETS, None)["pixel_values"]
    upstream = torch.randn(*crops.shape[:2], 96, generator=torch.Generator().manual_seed(3))
    expected = theirs.resnet(crops.flatten(0, 1)).view(*crops.shape[:2], -1)
    features = model.umgf.encode_objects(crops, torch.ones(crops.shape[:2], dtype=torch.bool))
    (expected * upstream).sum().backward()
    (features * upstream).sum().backward()
    assert torch.equal(features, expected)
    backbone = model.umgf.vision_backbone
    for name, parameter in theirs.resnet.named_parameters():
        assert torch.equal(backbone.get_parameter(name).grad, parameter.grad), name
    for name, buffer in theirs.resnet.named_buffers():  # the running statistics after the step
        assert torch.equal(backbone.get_buffer(name), buffer), name


def test_converted_folder_loads_as_processor_and_pipeline(converted) -> None:
    _, folder = converted
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert processor.grounder == "release" and processor.max_length == 128
    model = AutoModelForTokenClassification.from_pretrained(folder, trust_remote_code=True)
    assert model.config.dataset == "twitter2015" and model.config.crf_level == "token"
    ner = pipeline(model=str(folder), trust_remote_code=True)
    entities = ner("Photo of Helmut Kohl at the Brandenburg Gate", return_words=True)
    assert [w["word"] for w in entities["words"]][:3] == ["Photo", "of", "Helmut"]
    assert all(w["tag"] in LABELS for w in entities["words"])


def test_the_release_crop_transform_is_torchvisions() -> None:
    """Resize(256) -> CenterCrop(224) -> ToTensor -> ImageNet normalisation, as their collate_fn does."""
    from torchvision import transforms

    from modeling_umgf import UMGFImageProcessor

    config = UMGFConfig.from_preset("release")
    theirs = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (300, 410, 3), dtype=np.uint8))
    ours = UMGFImageProcessor(config.vision_backbone)([image])["pixel_values"][0]
    torch.testing.assert_close(ours, theirs(image), rtol=0, atol=1e-6)


def test_bad_checkpoints_are_named(tmp_path, converted) -> None:
    reference, _ = converted
    state = reference.state_dict()
    broken = {k: v for k, v in state.items() if k != "mhatt_x.1.linears.2.weight"}
    torch.save(broken, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"lacks 'mhatt_x\.1\.linears\.2\.weight'"):
        convert(tmp_path / "missing.pt", tmp_path / "out", str(tmp_path / "no-bert"), "test_resnet")
    torch.save({**state, "extra.weight": torch.zeros(2)}, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"does not: \['extra\.weight'\]"):
        convert(tmp_path / "extra.pt", tmp_path / "out", str(tmp_path / "no-bert"), "test_resnet")
    torch.save(
        {**state, "hidden2tag.weight": torch.zeros(12, 48), "hidden2tag.bias": torch.zeros(12)}, tmp_path / "tags.pt"
    )
    with pytest.raises(ValueError, match=r"classifier\.weight: \(12, 48\) vs \(13, 48\)"):
        convert(tmp_path / "tags.pt", tmp_path / "out", str(tmp_path / "no-bert"), "test_resnet")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        convert(tmp_path / "list.pt", tmp_path / "out", str(tmp_path / "no-bert"), "test_resnet")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"text\.pt is not a checkpoint of tensors that can be read safely"):
        convert(tmp_path / "text.pt", tmp_path / "out", str(tmp_path / "no-bert"), "test_resnet")
    assert main(["--checkpoint", str(tmp_path / "text.pt"), "--output_dir", str(tmp_path / "out")]) == 1


def test_without_a_tokenizer_the_model_is_converted_from_its_shapes(tmp_path, converted, caplog) -> None:
    """Offline, with no copy of the text encoder: BERT's configuration is read off the weights."""
    reference, _ = converted
    torch.save(reference.state_dict(), tmp_path / "ckpt.pt")
    with caplog.at_level("WARNING"):
        model = convert(tmp_path / "ckpt.pt", tmp_path / "out", str(tmp_path / "no-bert"), "test_resnet")
    assert "the processor is not" in caplog.text
    assert (tmp_path / "out" / "config.json").is_file() and not (tmp_path / "out" / "processor_config.json").exists()
    assert model.config.text_config.num_hidden_layers == 1 and model.config.text_config.vocab_size == len(VOCAB)


def test_token_tags_are_the_authors_labels() -> None:
    """[CLS] -> CLS, a word's first piece -> its tag (MISC as OTHER), its other pieces -> X, [SEP] -> SEP."""
    from modeling_umgf.tools.tiny_models import tiny_config

    config = tiny_config(
        **{
            k: v
            for k, v in UMGFConfig.from_preset("release").to_diff_dict().items()
            if k in ("crf_level", "token_labels", "loss_reduction", "decoder_type")
        }
    )
    model = UMGFForTokenClassification(config)
    x = batch_of(TWEETS, None)
    from modeling_umgf.modeling_umgf import word_layout

    words = word_layout(x["word_ids"], x["attention_mask"], x["labels"].shape[1])
    tags = model._token_tags(x["labels"], words)
    assert [row[: len(expected)] for row, expected in zip(tags.tolist(), x["token_tags"])] == x["token_tags"]


def write_crops(folder: Path, image_id: str, seed: int, skip: str | None = None) -> list[Image.Image]:
    crops = []
    for i, path in enumerate(crop_paths(folder, image_id)):
        crop = Image.fromarray(np.random.RandomState(seed + i).randint(0, 256, (10 + i, 7 + 2 * i, 3), dtype=np.uint8))
        crops.append(crop)
        if skip and skip in path.name:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path, format="PNG")  # written losslessly, so the read-back pixels are known
    return crops


def test_released_crops_become_the_tweets_objects(tmp_path) -> None:
    from modeling_umgf.tools.tiny_models import tiny_processor

    crops = {"101": write_crops(tmp_path, "101", 0), "102": write_crops(tmp_path, "102", 10, skip="location")}
    rows = [
        {
            "id": str(i),
            "image_id": image_id,
            "tokens": ["Berlin", "rocks"],
            "ner_tags": [3, 0],
            "image": None,
            **empty_grounding(),
        }
        for i, image_id in enumerate(["101", "102"])
    ]
    dataset = datasets.Dataset.from_list(rows, features=dataset_features())
    with pytest.raises(FileNotFoundError, match=r"tweet '1' \(IMGID 102\).*crop_location_102\.jpg"):
        attach_release_crops(dataset, tmp_path)
    attached, report = attach_release_crops(dataset, tmp_path, on_missing="text-only")
    assert (report.tweets, report.with_crops, report.text_only_ids) == (2, 1, ["1"])
    first = attached[0]
    assert first["grounder"] == "release" and first["object_word_start"] == [-1] * 4
    assert first["object_phrases"] == [word for _, word in CROP_FILES]
    assert attached[1]["image"] is None and attached[1]["object_boxes"] == []
    # the processor cuts out exactly the released pixels of each crop
    processor = tiny_processor(grounder="release")
    cut = processor(images=first["image"], words=first["tokens"], grounding={k: first[k] for k in empty_grounding()})
    expected = processor.image_processor(crops["101"])["pixel_values"]
    torch.testing.assert_close(cut["pixel_values"], expected, rtol=0, atol=0)


def test_an_image_id_that_leaves_the_crops_folder_is_refused(tmp_path) -> None:
    rows = [{"id": "0", "image_id": "../secret", "tokens": ["a"], "ner_tags": [0], "image": None, **empty_grounding()}]
    dataset = datasets.Dataset.from_list(rows, features=dataset_features())
    with pytest.raises(ValueError, match="not a plain file name"):
        attach_release_crops(dataset, tmp_path)


def test_token_level_scores_equal_brute_force_over_sub_token_paths() -> None:
    """Word marginals and entity probabilities of the token-level CRF: sums of p(path) over every sub-token tag
    path (13^4 of them) by how the path reads at the words' first sub-tokens."""
    import itertools

    from seqeval.metrics.sequence_labeling import get_entities

    from modeling_umgf.tools.tiny_models import tiny_config

    release = UMGFConfig.from_preset("release").to_diff_dict()
    config = tiny_config(**{k: release[k] for k in ("crf_level", "token_labels", "loss_reduction")})
    torch.manual_seed(3)
    model = UMGFForTokenClassification(config).eval()
    with torch.no_grad():
        model.crf.transitions.mul_(20)  # paths far from independent
        out = model(input_ids=torch.tensor([[2, 11, 19, 3]]), word_ids=torch.tensor([[-1, 0, 1, -1]]))
    paths = torch.tensor(list(itertools.product(range(len(TAGS)), repeat=4)))
    log_p = model.crf.log_likelihood(out.logits.expand(len(paths), -1, -1), paths, torch.ones(len(paths), 4).bool())
    p = log_p.detach().double().exp()
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-6)

    def read(tag: str) -> str:
        return "O" if tag in ("PAD", "X", "CLS", "SEP") else tag.replace("OTHER", "MISC")

    readings = [[read(TAGS[int(path[1])]), read(TAGS[int(path[2])])] for path in paths]
    marginals = torch.zeros(2, len(LABELS), dtype=torch.float64)
    entities: dict[tuple[str, int, int], float] = {}
    for words, weight in zip(readings, p.tolist()):
        for w, tag in enumerate(words):
            marginals[w, LABELS.index(tag)] += weight
        for entity in get_entities(words):
            entities[entity] = entities.get(entity, 0.0) + weight
    torch.testing.assert_close(model.tag_probabilities(out)[0].double(), marginals, rtol=0, atol=1e-5)
    asked = [(0, t, s, e + 1) for t, s, e in entities]
    scores = model.entity_probabilities(out, asked).tolist()
    assert scores == pytest.approx(list(entities.values()), abs=1e-5)


def test_evaluating_a_converted_checkpoint_on_released_crops_is_one_command(tmp_path, converted) -> None:
    """train_umgf.py --num_train_epochs 0: the converted model scored on the Twitter test split, its objects the
    released crops; the predictions file holds what the model predicts from those crops."""
    import json

    import train_umgf

    _, folder = converted
    fixtures = Path(__file__).parent / "fixtures" / "twitter"
    for line in (fixtures / "twitter2015").glob("*.txt"):
        for image_id in (row[6:].strip() for row in line.read_text().splitlines() if row.startswith("IMGID:")):
            write_crops(tmp_path / "crops", image_id, seed=int(image_id))
    results = train_umgf.main(
        [
            "--model_name_or_path",
            str(folder),
            "--num_train_epochs",
            "0",
            "--umt_data_dir",
            str(fixtures),
            "--dataset_config_name",
            "twitter2015",
            "--release_crops_dir",
            str(tmp_path / "crops"),
            "--output_dir",
            str(tmp_path / "eval"),
        ]
    )
    assert results["mode"] == "evaluate" and "test" in results and "global_step" not in results
    records = [json.loads(line) for line in (tmp_path / "eval" / "predictions_test.jsonl").read_text().splitlines()]
    model = UMGFForTokenClassification.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    test, _ = attach_release_crops(
        train_umgf.load_data(
            train_umgf.parse_args(
                [
                    "--umt_data_dir",
                    str(fixtures),
                    "--dataset_config_name",
                    "twitter2015",
                    "--model_name_or_path",
                    str(folder),
                ]
            ),
            "twitter2015",
            None,
        )["test"],
        tmp_path / "crops",
    )
    batch = processor.data_collator()(
        [{k: v[i] for k, v in processor.process_examples(test[:]).items()} for i in range(len(test))]
    )
    inputs, _ = processor.split_batch(batch)
    assert inputs["pixel_values"].shape[1] == 4  # the four released crops of every tweet
    with torch.no_grad():
        predictions = model(**{k: v for k, v in inputs.items() if k != "labels"}).predictions
    assert [r["pred"] for r in records] == processor.decode_word_predictions(
        predictions, [len(t) for t in test["tokens"]]
    )


def test_token_level_tags_and_marginals_of_a_batch() -> None:
    """A first word of two pieces is tagged and X like any other; a batch's per-word marginals are each sentence's."""
    from modeling_umgf.modeling_umgf import word_layout
    from modeling_umgf.tools.tiny_models import tiny_config

    release = UMGFConfig.from_preset("release").to_diff_dict()
    torch.manual_seed(1)
    model = UMGFForTokenClassification(tiny_config(**{k: release[k] for k in ("crf_level", "token_labels")})).eval()
    x = batch_of([([[11, 12], [13]], ["B-PER", "O"]), ([[19]], ["B-LOC"])], pad_to=None)
    words = word_layout(x["word_ids"], x["attention_mask"], 2)
    tags = model._token_tags(x["labels"], words)
    assert [TAGS[t] for t in tags[0]] == ["CLS", "B-PER", "X", "O", "SEP"]
    with torch.no_grad(), torch.device("meta"):  # made on the inputs' device (test_model_reference.py)
        together = model.tag_probabilities(
            model(input_ids=x["input_ids"], word_ids=x["word_ids"], attention_mask=x["attention_mask"])
        )
        for b, length in enumerate((5, 3)):
            alone = model(input_ids=x["input_ids"][b : b + 1, :length], word_ids=x["word_ids"][b : b + 1, :length])
            real = int(words.word_mask[b].sum())
            torch.testing.assert_close(together[b, :real], model.tag_probabilities(alone)[0])


@pytest.mark.parametrize("content", [bytes(range(256)) * 12, b"PK\x03\x04 truncated zip", b""])
def test_a_file_that_is_no_checkpoint_is_named_without_advising_to_unpickle(tmp_path, content, capsys) -> None:
    from modeling_umgf.tools.convert_original_checkpoint import main

    path = tmp_path / "ddp_mner.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{path} is not a checkpoint of tensors that can be read safely") as error:
        convert(path, tmp_path / "out", str(tmp_path / "no-bert"), "test_resnet")
    assert "weights_only=False" not in str(error.value)
    assert main(["--checkpoint", str(path), "--output_dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert (
        "is not a checkpoint of tensors" in err and "weights_only=False" not in err and not (tmp_path / "out").exists()
    )


def test_evaluation_as_the_authors_on_their_data_layout(tmp_path, converted) -> None:
    """--metric authors on a *_authors config: a word without sub-tokens leaves the tweet with its tag, the words cut
    by --max_length are left out of the authors' scores (counted here from the tokenizer's pieces), seqeval is
    reported beside them, and the dev epoch is selected on the authors' F1."""
    import json

    import train_umgf
    from datasets_scripts.cli import main as datasets_main
    from modeling_umgf.tools.metrics import authors_entity_scores

    _, folder = converted
    words = [["Photo", "of", "\u200b", "Helmut", "Kohl"], ["the", "gate", "!"] * 6, ["Brandenburg", "gate"]]
    tags = [["O", "O", "B-PER", "B-PER", "I-PER"], ["O", "B-LOC", "O"] * 6, ["B-OTHER", "I-OTHER"]]
    root = tmp_path / "my_data" / "twitter2015"
    for split in ("train", "valid", "test"):
        for number, (w, t) in enumerate(zip(words, tags)):
            (root / split).mkdir(parents=True, exist_ok=True)
            (root / split / f"{number}_s.txt").write_text("\t".join(w), encoding="utf-8")
            (root / split / f"{number}_l.txt").write_text("\t".join(t), encoding="utf-8")
            (root / split / f"{number}_p.txt").write_text(f"7{number}", encoding="utf-8")
            write_crops(tmp_path / "crops", f"7{number}", seed=number)
    datasets_main(
        ["build", "--output_dir", str(tmp_path / "ds"), "--authors_data_dir", str(tmp_path / "my_data"),
         "--configs", "twitter2015_authors"]
    )  # fmt: skip
    max_length = 12
    results = train_umgf.main(
        ["--model_name_or_path", str(folder), "--num_train_epochs", "0", "--dataset_name", str(tmp_path / "ds"),
         "--dataset_config_name", "twitter2015_authors", "--release_crops_dir", str(tmp_path / "crops"),
         "--metric", "authors", "--max_length", str(max_length), "--output_dir", str(tmp_path / "eval")]
    )  # fmt: skip
    records = [json.loads(line) for line in (tmp_path / "eval" / "predictions_test.jsonl").read_text().splitlines()]
    assert records[0]["tokens"] == ["Photo", "of", "Helmut", "Kohl"]  # the zero-width space went with its B-PER
    assert records[0]["gold"] == ["O", "O", "B-PER", "I-PER"]
    processor = AutoProcessor.from_pretrained(folder)
    gold, pred = [], []
    for record in records:
        position, scored = 1, 0  # after [CLS]; a word is scored when its first piece is before the last place
        for word in record["tokens"]:
            if position < max_length - 1:
                scored += 1
            position += len(processor.tokenizer.tokenize(word))
        gold.append(record["gold"][:scored])
        pred.append(record["pred"][:scored])
    assert len(gold[1]) < len(records[1]["tokens"])  # the long tweet was cut
    assert results["test"]["authors"] == authors_entity_scores(gold, pred)
    assert results["test"]["authors"]["support"] == 5  # PER, 3 LOC before the cut, MISC
    assert results["test"]["support"] == 8  # seqeval beside it: every gold entity, the cut ones predicted O
    assert results["dev_f1"] == pytest.approx(results["test"]["authors"]["f1"])  # dev is test's copy here
