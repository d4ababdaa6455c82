"""Tests of modeling_umgf.tools.training_args: bad arguments fail early with a clear message, and the optimisation
flags not given come from the preset's training recipe (or the synthetic job's)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from datasets_scripts.synthetic import SYNTHETIC_JOB
from modeling_umgf.configuration_umgf import PRESET_RECORDS
from modeling_umgf.tools import training_args
from modeling_umgf.tools.training_args import parse_args

FIXTURES = Path(__file__).parent / "fixtures" / "twitter"


# ----------------------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "papr"], "invalid choice: 'papr'"),
        (
            [
                "--umt_data_dir",
                "/no/such/dir",
                "--dataset_config_name",
                "twitter2017",
                "--text_model_name_or_path",
                "x",
            ],
            "/no/such/dir/twitter2017 lacks",
        ),
        (["--image_dir", "/no/such/images"], "no such folder /no/such/images"),
        (["--resume_from_checkpoint", "/no/such/ckpt"], "no such checkpoint folder"),
        (["--config_overrides", "hiden_size=3"], "unknown UMGFConfig fields ['hiden_size']"),
        (["--checkpointing_steps", "often"], "--checkpointing_steps must be"),
    ],
)
def test_bad_arguments_fail_early(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def twitter(*extra: str) -> list[str]:
    return [
        "--umt_data_dir",
        str(FIXTURES),
        "--dataset_config_name",
        "twitter2015",
        "--text_model_name_or_path",
        "b",
        *extra,
    ]


@pytest.mark.parametrize("preset", ["paper", "release", "wo-tar"])
def test_the_flags_not_given_are_the_presets_recipe(preset: str) -> None:
    args = parse_args(twitter("--preset", preset))
    recipe = PRESET_RECORDS[preset].training
    assert {f.name: getattr(args, f.name) for f in dataclasses.fields(recipe)} == dataclasses.asdict(recipe)


def test_a_flag_given_wins_over_the_recipe_and_the_synthetic_job_has_its_own() -> None:
    args = parse_args(twitter("--preset", "release", "--num_train_epochs", "2", "--shuffle_train"))
    assert (args.num_train_epochs, args.shuffle_train, args.optimizer) == (2, True, "adam")
    synthetic = parse_args([])
    assert (synthetic.learning_rate, synthetic.num_train_epochs, synthetic.freeze_vision_backbone) == (
        SYNTHETIC_JOB.training.learning_rate,
        SYNTHETIC_JOB.training.num_train_epochs,
        True,
    )


@pytest.mark.parametrize(
    "extra, shuffled",
    [(["--preset", "release"], False), ([], True), (["--preset", "release", "--shuffle_train"], True)],
)
def test_the_release_recipe_reads_the_data_in_order(extra, shuffled) -> None:
    assert parse_args(twitter(*extra)).shuffle_train is shuffled


def test_with_tracking_is_report_to_all_unless_a_tracker_is_named(monkeypatch) -> None:
    monkeypatch.setattr(training_args.accelerate_imports, "is_tensorboard_available", lambda: True)
    assert parse_args([]).report_to == "none"
    assert parse_args(["--with_tracking"]).report_to == "all"
    assert parse_args(["--report_to", "tensorboard", "--with_tracking"]).report_to == "tensorboard"
    assert parse_args(["--with_tracking", "--report_to", "tensorboard"]).report_to == "tensorboard"
