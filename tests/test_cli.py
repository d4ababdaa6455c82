"""umgf-predict: every output format against the pipeline, the drawn boxes (pixels), one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import saved_tiny_ner_folder
from PIL import Image
from test_pipeline import TWEET, count_decodes, quadrant_image

from modeling_umgf.tools.cli import main
from modeling_umgf.tools.tiny_models import tiny_ner_pipeline
from modeling_umgf.visualization import BOX_WIDTH, MIN_SIDE, OTHER_COLOUR, TYPE_COLOURS

TEXT = "Kawhi Leonard wins the fan vote"


@pytest.fixture(scope="module")
def tiny_ner_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saved_tiny_ner_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def local():
    return tiny_ner_pipeline()


@pytest.fixture
def image_path(tmp_path) -> Path:
    path = tmp_path / "tweet.png"
    quadrant_image().save(path)
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_jsonl_output_is_the_pipeline_output(tiny_ner_folder, tmp_path, image_path, capsys, local) -> None:
    posts = tmp_path / "posts.jsonl"
    posts.write_text(
        json.dumps({"id": "a", "text": TWEET, "image": str(image_path)})
        + "\n\n"
        + json.dumps({"words": ["Berlin", "rocks"]})
        + "\n",
        encoding="utf-8",
    )
    code, out, err = run_cli(capsys, "--model", tiny_ner_folder, "--input", posts, "--format", "jsonl")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["id"] for line in lines] == ["a", f"{posts}:3"]
    expected = [
        local({"text": TWEET, "image": quadrant_image()}, return_words=True),
        local({"words": ["Berlin", "rocks"]}, return_words=True),
    ]
    for line, want in zip(lines, expected):
        assert [w["tag"] for w in line["words"]] == [w["tag"] for w in want["words"]]
        assert [(e["entity_group"], e["start"], e["end"], e["word"]) for e in line["entities"]] == [
            (e["entity_group"], e["start"], e["end"], e["word"]) for e in want["entities"]
        ]
        assert [e["score"] for e in line["entities"]] == pytest.approx([e["score"] for e in want["entities"]], abs=1e-5)


def test_compile_flag_optimizes_the_loaded_model_before_predicting(tiny_ner_folder, capsys, local, monkeypatch) -> None:
    """--compile calls optimize_for_inference (tested for equal outputs in test_speed_options.py) once,
    before any prediction; stubbed here so this test does not pay for a compilation."""
    from modeling_umgf import UMGFForTokenClassification

    events = []
    monkeypatch.setattr(UMGFForTokenClassification, "optimize_for_inference", lambda self: events.append("optimize"))
    forward = UMGFForTokenClassification.forward
    monkeypatch.setattr(
        UMGFForTokenClassification, "forward", lambda self, *a, **k: events.append("forward") or forward(self, *a, **k)
    )
    code, out, err = run_cli(capsys, "--model", tiny_ner_folder, "--text", TEXT, "--format", "conll", "--compile")
    assert code == 0, err
    assert events[0] == "optimize" and events.count("optimize") == 1 and "forward" in events
    assert out == "".join(f"{w['word']}\t{w['tag']}\n" for w in local(TEXT, return_words=True)["words"]) + "\n"


def test_conll_and_table_outputs(tiny_ner_folder, capsys, local) -> None:
    want = local(TEXT, return_words=True)
    code, out, err = run_cli(capsys, "--model", tiny_ner_folder, "--text", TEXT, "--format", "conll")
    assert code == 0, err
    assert out == "".join(f"{w['word']}\t{w['tag']}\n" for w in want["words"]) + "\n"

    code, out, err = run_cli(capsys, "--model", tiny_ner_folder, "--text", TEXT)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"# text: {TEXT}" and lines[1].split() == [
        "TYPE",
        "ENTITY",
        "CHARS",
        "SCORE",
        "TOP",
        "BOX",
        "(alpha)",
    ]
    rows = [line.split("  ") for line in lines[2:] if line]
    rows = [[cell.strip() for cell in row if cell.strip()] for row in rows]
    assert rows == [
        [e["entity_group"], e["word"], f"{e['start']}-{e['end']}", f"{e['score']:.3f}", "-"] for e in want["entities"]
    ]


def test_draw_outlines_the_grounded_boxes_in_the_colour_of_their_entity(
    tiny_ner_folder, tmp_path, image_path, capsys, local
) -> None:
    out_png = tmp_path / "drawn" / "boxes.png"
    code, _, err = run_cli(
        capsys,
        "--model",
        tiny_ner_folder,
        "--text",
        TEXT,
        "--image",
        image_path,
        "--draw",
        out_png,
        "--format",
        "jsonl",
    )
    assert code == 0, err
    drawn = np.asarray(Image.open(out_png).convert("RGB"))
    scale = -(-MIN_SIDE // min(quadrant_image().size))  # small images are drawn enlarged, pixels kept sharp
    # the picture on top, the post and the scores in a band below it
    assert drawn.shape[1] == quadrant_image().width * scale and drawn.shape[0] > quadrant_image().height * scale
    drawn = drawn[: quadrant_image().height * scale]
    original = np.asarray(quadrant_image()).repeat(scale, axis=0).repeat(scale, axis=1)
    entities = local(TEXT, image=quadrant_image())
    best: dict[tuple, tuple[float, str]] = {}
    for entity in entities:
        for box in entity["boxes"]:
            key = tuple(box["box"].values())
            if key not in best or box["alpha"] > best[key][0]:
                best[key] = (box["alpha"], entity["entity_group"])
    assert len(best) == 9  # the 3 x 3 grid cells, each linked to every word
    for (x0, y0, x1, y1), (_, entity_type) in best.items():
        x0, y0, x1, y1 = (round(v * scale) for v in (x0, y0, x1, y1))
        colour = TYPE_COLOURS.get(entity_type, OTHER_COLOUR)
        low = y1 - 5  # below the label, which sits in the box's top-left corner
        for x in range(x0, x0 + BOX_WIDTH):  # left edge, BOX_WIDTH pixels wide
            assert tuple(drawn[low, x]) == colour
        assert tuple(drawn[y1 - 1, (x0 + x1) // 2]) == colour  # bottom edge
        inside = (y0 + y1) // 2 + 5, (x0 + x1) // 2
        assert tuple(drawn[inside]) == tuple(original[inside])  # the inside is untouched


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "{tmp}/missing-model", "--text", TEXT], "model folder not found"),
        (["--model", "{model}", "--text", "  "], "--text is empty"),
        (["--model", "{model}", "--text", TEXT, "--image", "{tmp}/nothing.png"], "cannot read image"),
        (["--model", "{model}", "--text", TEXT, "--image", "{tmp}/corrupt.png"], "cannot read image"),
        (["--model", "{model}", "--input", "{tmp}/bad.jsonl"], "bad.jsonl:2: not valid JSON"),
        (["--model", "{model}", "--input", "{tmp}/empty_text.jsonl"], "empty_text.jsonl:1: empty text"),
        (["--model", "{model}", "--text", TEXT, "--draw", "{tmp}/x.png"], "--draw with --text needs --image"),
        (["--model", "{model}", "--text", TEXT, "--format", "xml"], "invalid choice"),
        (["--text", TEXT], "--model"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(tiny_ner_folder, tmp_path, capfd, argv, message) -> None:
    """Checked on the file descriptors, so that log records and progress bars would show up too."""
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    (tmp_path / "empty_text.jsonl").write_text('{"text": ""}\n', encoding="utf-8")
    argv = [a.format(tmp=tmp_path, model=tiny_ner_folder) for a in argv]
    code = main(argv)
    out, err = capfd.readouterr()
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("umgf-predict: error: ") and message in err


def test_grounder_choice_and_json_grounding(tiny_ner_folder, tmp_path, image_path, capsys) -> None:
    grounding = {
        "object_boxes": [[0, 0, 60, 45]],
        "object_scores": [0.9],
        "object_phrases": ["Kawhi Leonard"],
        "object_word_start": [0],
        "object_word_end": [2],
        "grounder": "detector",
    }
    posts = tmp_path / "posts.jsonl"
    posts.write_text(
        json.dumps({"id": "given", "text": TEXT, "image": str(image_path), "grounding": grounding})
        + "\n"
        + json.dumps({"id": "grid", "text": TEXT, "image": str(image_path)})
        + "\n"
    )
    code, out, err = run_cli(
        capsys,
        "--model",
        tiny_ner_folder,
        "--input",
        posts,
        "--format",
        "jsonl",
        "--grounder",
        "grid",
        "--grounder-kwargs",
        '{"grid_size": 2}',
    )
    assert code == 0, err
    given, grid = (json.loads(line) for line in out.splitlines())
    assert [o["phrase"] for o in given["objects"]] == ["Kawhi Leonard"]  # a post's own grounding is used as is
    assert [o["box"] for o in given["objects"]] == [{"xmin": 0.0, "ymin": 0.0, "xmax": 60.0, "ymax": 45.0}]
    assert len(grid["objects"]) == 4  # --grounder grid with a 2 x 2 grid
    code, _, err = run_cli(capsys, "--model", tiny_ner_folder, "--text", TEXT, "--grounder", "yolo")
    assert code == 2 and "invalid choice: 'yolo'" in err


def test_draw_writes_one_picture_per_post_with_an_image(tiny_ner_folder, tmp_path, image_path, capsys, local) -> None:
    posts = tmp_path / "posts.jsonl"
    lines = [{"id": "a/1", "text": TEXT, "image": str(image_path)}, {"id": "b", "text": TEXT}]
    posts.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    code, _, err = run_cli(capsys, "--model", tiny_ner_folder, "--input", posts, "--draw", tmp_path / "drawn")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == ["a_1.png"]  # the post without image: none
    expected = local.draw_entities(quadrant_image(), local(TEXT, image=quadrant_image()), text=TEXT)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "drawn" / "a_1.png").convert("RGB")), np.asarray(expected))
    assert not np.array_equal(np.asarray(expected), np.asarray(quadrant_image()))  # boxes were drawn
    (tmp_path / "file.png").write_bytes(b"")
    code, _, err = run_cli(capsys, "--model", tiny_ner_folder, "--input", posts, "--draw", tmp_path / "file.png")
    assert code == 2 and "needs a folder" in err


def test_device_default_is_cuda_when_available(tiny_ner_folder, monkeypatch) -> None:
    from modeling_umgf.tools import cli

    chosen = {}

    class Recorder:
        def __init__(self, **kwargs):
            chosen.update(kwargs)

    monkeypatch.setattr(cli, "MultimodalNERPipeline", Recorder)
    monkeypatch.setattr(cli.torch.cuda, "is_available", lambda: True)
    cli.load_pipeline(str(tiny_ner_folder), None)
    assert str(chosen["device"]) == "cuda"
    monkeypatch.setattr(cli.torch.cuda, "is_available", lambda: False)
    cli.load_pipeline(str(tiny_ner_folder), None)
    assert str(chosen["device"]) == "cpu"


def test_a_300_word_post_is_cut_and_its_last_words_tagged_o(tiny_ner_folder, capsys, local) -> None:
    text = " ".join(["Berlin", "rocks"] * 150)
    code, out, err = run_cli(capsys, "--model", tiny_ner_folder, "--text", text, "--format", "jsonl")
    assert code == 0, err
    result = json.loads(out)
    assert len(result["words"]) == 300 and result["truncated_words"] == 300 - 62  # 64 positions - [CLS], [SEP]
    assert all(w["tag"] == "O" and w["score"] is None for w in result["words"][62:])
    assert all(e["word_end"] <= 62 for e in result["entities"])


# ------------------------------------------------------------------------------- files, names, bad settings
def test_draw_gives_every_post_its_own_file_and_never_writes_through_a_link(
    tiny_ner_folder, tmp_path, image_path, capsys
) -> None:
    posts = tmp_path / "posts.jsonl"
    ids = ["same", "same", "..", "...", "a"]
    posts.write_text("".join(json.dumps({"id": i, "text": TEXT, "image": str(image_path)}) + "\n" for i in ids))
    drawn = tmp_path / "drawn"
    drawn.mkdir()
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"precious")
    (drawn / "a.png").symlink_to(outside)
    code, _, err = run_cli(capsys, "--model", tiny_ner_folder, "--input", posts, "--draw", drawn)
    assert code == 0, err
    assert sorted(p.name for p in drawn.iterdir()) == ["a.png", "post-2.png", "post.png", "same-2.png", "same.png"]
    assert outside.read_bytes() == b"precious"  # the link was replaced, its target untouched
    assert (
        not (drawn / "a.png").is_symlink() and Image.open(drawn / "a.png").size == Image.open(drawn / "same.png").size
    )
    assert sorted(tmp_path.glob("*.png")) == [outside, image_path] and not list(drawn.glob(".*"))  # no leftovers


def test_unique_file_names_stay_in_the_folder_and_apart() -> None:
    from modeling_umgf.tools.safe_files import unique_file_names

    names = unique_file_names(["a/../b", "..", "A", "a", "x y", "x_y", ""], ".png")
    assert names == ["a_.._b.png", "post.png", "A.png", "a-2.png", "x_y.png", "x_y-2.png", "post-2.png"]
    assert len({n.lower() for n in names}) == len(names) and all("/" not in n and n[0] != "." for n in names)


def test_bad_files_and_settings_name_what_and_where(tiny_ner_folder, tmp_path, capfd) -> None:
    from PIL import Image as PILImage

    utf16 = tmp_path / "posts16.jsonl"
    utf16.write_text('{"text": "Berlin"}\n', encoding="utf-16")
    extra = tmp_path / "extra.jsonl"
    extra.write_text('{"text": "Berlin"}\n{"text": "Berlin", "imgae": "x.png"}\n', encoding="utf-8")
    bomb = tmp_path / "bomb.png"
    PILImage.new("1", (10000, 10000)).save(bomb)
    cases = [
        (["--input", utf16], f"{utf16}:1: not UTF-8 text"),
        (["--input", extra], f"{extra}:2: unknown key(s) ['imgae']"),
        (
            ["--text", TEXT, "--grounder", "grid", "--grounder-kwargs", '{"nope": 1}'],
            "grounder 'grid': got an unexpected",
        ),
        (["--text", TEXT, "--grounder", "grid", "--grounder-kwargs", "[1]"], "--grounder-kwargs must be a JSON object"),
        (["--text", TEXT, "--image", bomb], "exceeds the pixel budget of 40000000 pixels"),
        (["--text", TEXT, "--image", image_path_of(tmp_path), "--max-image-pixels", "100"], "budget of 100 pixels"),
    ]
    for argv, message in cases:
        code = main([str(a) for a in ["--model", tiny_ner_folder, *argv]])
        out, err = capfd.readouterr()
        assert code == 2 and out == "", (argv, err)
        assert len(err.splitlines()) == 1 and message in err, (argv, err)


def image_path_of(folder: Path) -> Path:
    path = folder / "small.png"
    quadrant_image().save(path)
    return path


def test_stdin_output_file_progress_and_image_paths_relative_to_the_input_file(
    tiny_ner_folder, tmp_path, capsys, monkeypatch, local
) -> None:
    import io

    folder = tmp_path / "posts"
    (folder / "img").mkdir(parents=True)
    quadrant_image().save(folder / "img" / "tweet.png")
    (folder / "posts.jsonl").write_text(json.dumps({"id": "a", "text": TEXT, "image": "img/tweet.png"}) + "\n")
    monkeypatch.chdir(tmp_path)  # img/tweet.png is not there: only the file's folder holds it
    out = tmp_path / "entities.jsonl"
    argv = ["--model", tiny_ner_folder, "--input", folder / "posts.jsonl", "--format", "jsonl", "--output", out]
    code, printed, err = run_cli(capsys, *argv, "--draw", tmp_path / "drawn")
    assert code == 0, err
    assert printed == ""  # the output went to the file
    expected = local(TEXT, image=quadrant_image())
    [result] = [json.loads(line) for line in out.read_text().splitlines()]
    assert result["id"] == "a" and result["entities"] == json.loads(json.dumps(list(expected)))
    assert f"wrote 1 posts (jsonl) to {out}" in err and f"wrote {tmp_path / 'drawn' / 'a.png'}" in err
    assert "tagging" in err and "1/1" in err  # the progress bar over the posts
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"id": "s", "words": ["Berlin", "rocks"]}) + "\n"))
    code, printed, err = run_cli(capsys, "--model", tiny_ner_folder, "--input", "-", "--format", "conll")
    assert code == 0, err
    want = local({"words": ["Berlin", "rocks"]})
    assert printed == "".join(f"{w['word']}\t{w['tag']}\n" for w in want.words) + "\n"


def test_each_image_is_decoded_once_per_post(tiny_ner_folder, tmp_path, image_path, capsys, monkeypatch) -> None:
    """Read and checked once (`processing_umgf.read_post`): the pipeline and the drawing use that image."""
    posts = tmp_path / "posts.jsonl"
    posts.write_text(
        "".join(json.dumps({"id": name, "text": TWEET, "image": str(image_path)}) + "\n" for name in "ab"),
        encoding="utf-8",
    )
    counts = count_decodes(monkeypatch)
    code, _, err = run_cli(capsys, "--model", tiny_ner_folder, "--input", posts, "--draw", tmp_path / "drawn")
    assert code == 0, err
    assert counts == {"open": 2, "load": 2} and sorted(p.name for p in (tmp_path / "drawn").iterdir()) == [
        "a.png",
        "b.png",
    ]
