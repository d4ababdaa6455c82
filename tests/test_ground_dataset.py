"""datasets_scripts/ground_dataset.py: grounds a split into the CONTRACT.md columns, resumably."""

from __future__ import annotations

import datasets
import numpy as np
from PIL import Image

from datasets_scripts.ground_dataset import ground_split, join_grounding, main
from datasets_scripts.twitter_mner import EMPTY_GROUNDING, FEATURES
from modeling_umgf.grounding import GridGrounder


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
