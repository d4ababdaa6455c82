"""datasets_scripts/ground_dataset.py: grounds a split into the CONTRACT.md columns, resumably."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datasets_scripts.ground_dataset import chunk_key, ground_split, join_grounding, main
from datasets_scripts.twitter_mner import EMPTY_GROUNDING, FEATURES
from modeling_umgf.model_free_grounding import GridGrounder


def tiny_split(count: int = 5) -> datasets.Dataset:
    rows = [
        {
            "id": f"t{i}",
            "image_id": f"{i}.jpg",
            "tokens": ["Berlin", "rocks"],
            "ner_tags": [3, 0],
            "image": None if i % 2 else Image.new("RGB", (4 + i, 2)),
            **EMPTY_GROUNDING,
        }
        for i in range(count)
    ]
    return datasets.Dataset.from_list(rows, features=FEATURES)


class CountingGrid(GridGrounder):
    def __init__(self):
        super().__init__(grid_size=2)
        self.images = 0

    def ground(self, images, sentences, sample_ids):
        self.images += len(images)
        return super().ground(images, sentences, sample_ids)


def test_command_writes_the_grounding_columns(tmp_path) -> None:
    tiny_split().save_to_disk(str(tmp_path / "in"))
    output = main(
        [
            "--dataset",
            str(tmp_path / "in"),
            "--split",
            "train",
            "--output_dir",
            str(tmp_path / "out"),
            "--grounder",
            "grid",
            "--grounder_kwargs",
            '{"grid_size": 2}',
            "--chunk_size",
            "2",
        ]
    )
    grounded = datasets.load_dataset("parquet", data_files=str(output), split="train")
    assert grounded.features == FEATURES and grounded["id"] == [f"t{i}" for i in range(5)]
    for i, row in enumerate(grounded):
        if i % 2:  # no image: not grounded
            assert row["grounder"] == "" and row["object_boxes"] == []
        else:
            width = 4 + i
            expected = [[0, 0, width / 2, 1], [width / 2, 0, width, 1], [0, 1, width / 2, 2], [width / 2, 1, width, 2]]
            np.testing.assert_allclose(row["object_boxes"], expected, rtol=1e-6)
            assert row["grounder"] == "grid" and row["object_word_start"] == [-1] * 4


def test_an_interrupted_run_resumes_with_the_missing_chunks_only(tmp_path) -> None:
    split = tiny_split()
    first = CountingGrid()
    paths = ground_split(split, first, tmp_path, chunk_size=2, show_progress=False)
    assert first.images == 3 and all(path.exists() for path in paths) and len(paths) == 3
    paths[1].unlink()  # chunk of rows 2-3 lost (the run was killed there)
    stamps = {path: path.stat().st_mtime_ns for path in (paths[0], paths[2])}
    second = CountingGrid()
    ground_split(split, second, tmp_path, chunk_size=2, show_progress=False)
    assert second.images == 1  # only row 2 (row 3 has no image)
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps
    joined = join_grounding(split, paths)
    assert joined["grounder"] == ["grid", "", "grid", "", "grid"]
    # Each of two processes grounds every other chunk.
    for index, expected in ((0, 2), (1, 1)):
        counting = CountingGrid()
        ground_split(
            split,
            counting,
            tmp_path / "parallel",
            chunk_size=2,
            process_index=index,
            num_processes=2,
            show_progress=False,
        )
        assert counting.images == expected


def test_an_output_folder_that_cannot_be_written_stops_before_loading(tmp_path, capsys) -> None:
    (tmp_path / "file.txt").write_text("not a folder")
    for output_dir, reason in (
        (tmp_path / "file.txt", f"{tmp_path / 'file.txt'} is a file, not a folder"),
        (Path("/proc/umgf-test-grounding"), "cannot write in /proc/umgf-test-grounding: No such file or directory"),
    ):
        args = ["--dataset", str(tmp_path / "no-such-dataset"), "--split", "train", "--output_dir", str(output_dir)]
        with pytest.raises(SystemExit) as caught:
            main([*args, "--grounder", "grid"])
        assert caught.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: --output_dir {output_dir}: {reason}")


def test_two_cpu_processes_form_one_job_and_write_the_one_process_output(tmp_path) -> None:
    """Two processes launched by accelerate on CPU (gloo): each grounds every other chunk and the merged Parquet
    equals the one-process run's."""
    tiny_split(9).save_to_disk(str(tmp_path / "in"))
    args = ["--dataset", str(tmp_path / "in"), "--split", "train", "--grounder", "grid", "--chunk_size", "2"]
    args += ["--grounder_kwargs", '{"grid_size": 2}']
    single = main([*args, "--output_dir", str(tmp_path / "one")])
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    run = subprocess.run(
        [*launch, "-m", "datasets_scripts.ground_dataset", *args, "--output_dir", str(tmp_path / "two")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    # 9 rows in chunks of 2: chunks 0..4, process 0 takes 0, 2, 4 and process 1 takes 1, 3
    assert "process 0 of 2 grounds chunks [0, 2, 4] of 5 (0 already done)" in run.stderr
    assert "process 1 of 2 grounds chunks [1, 3] of 5 (0 already done)" in run.stderr
    [folder] = (tmp_path / "two" / ".chunks" / "train").iterdir()
    chunks = sorted(path.name for path in folder.iterdir())
    assert chunks == [f"rows-{start:09d}-{min(start + 2, 9):09d}.parquet" for start in range(0, 9, 2)]
    one = pq.read_table(single)
    two = pq.read_table(tmp_path / "two" / "train.parquet")
    assert two.equals(one)
    assert one.column("grounder").to_pylist() == ["grid" if i % 2 == 0 else "" for i in range(9)]


def test_a_rerun_with_another_grounder_or_settings_grounds_again(tmp_path) -> None:
    tiny_split().save_to_disk(str(tmp_path / "in"))

    def ground(grounder: str, kwargs: str) -> list:
        output = main(
            ["--dataset", str(tmp_path / "in"), "--split", "train", "--output_dir", str(tmp_path / "out")]
            + ["--grounder", grounder, "--grounder_kwargs", kwargs, "--chunk_size", "2"]
        )
        return datasets.load_dataset("parquet", data_files=str(output), split="train")["object_boxes"]

    two = ground("grid", '{"grid_size": 2}')
    one = ground("grid", '{"grid_size": 1}')
    assert [len(boxes) for boxes in two] == [4, 0, 4, 0, 4] and [len(boxes) for boxes in one] == [1, 0, 1, 0, 1]
    assert ground("grid", '{"grid_size": 2}') == two  # the same settings again: its own chunks
    folders = sorted(path.name for path in (tmp_path / "out" / ".chunks" / "train").iterdir())
    assert folders == sorted([chunk_key("grid", {"grid_size": 2}), chunk_key("grid", {"grid_size": 1})])


def test_bad_grounder_settings_are_named(tmp_path, capsys) -> None:
    tiny_split().save_to_disk(str(tmp_path / "in"))
    argv = ["--dataset", str(tmp_path / "in"), "--split", "train", "--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit):
        main([*argv, "--grounder", "grid", "--grounder_kwargs", '{"nope": 1}'])
    assert "grounder 'grid': got an unexpected keyword argument 'nope'" in capsys.readouterr().err


def test_the_output_is_renamed_into_place_never_written_through_a_link(tmp_path) -> None:
    tiny_split().save_to_disk(str(tmp_path / "in"))
    (tmp_path / "out").mkdir()
    (tmp_path / "precious.parquet").write_bytes(b"keep")
    (tmp_path / "out" / "train.parquet").symlink_to(tmp_path / "precious.parquet")
    argv = ["--dataset", str(tmp_path / "in"), "--split", "train", "--output_dir", str(tmp_path / "out")]
    output = main([*argv, "--grounder", "grid", "--grounder_kwargs", '{"grid_size": 1}'])
    assert (tmp_path / "precious.parquet").read_bytes() == b"keep" and not output.is_symlink()
    assert datasets.load_dataset("parquet", data_files=str(output), split="train")["id"] == [f"t{i}" for i in range(5)]
