"""Tests of modeling_umgf.tools.model_building and the preset records: config overrides, the preset read back from
a saved model's config, and the synthetic job's grounder."""

from __future__ import annotations

import pytest

from datasets_scripts.synthetic import SYNTHETIC_JOB
from modeling_umgf import UMGFConfig
from modeling_umgf.configuration_umgf import PRESET_RECORDS
from modeling_umgf.tools.model_building import parse_config_overrides, preset_of


def test_config_overrides_are_literals_where_they_parse() -> None:
    assert parse_config_overrides("hidden_size=256, dropout=0.5,decoder_type=crf") == {
        "hidden_size": 256,
        "dropout": 0.5,
        "decoder_type": "crf",
    }
    with pytest.raises(ValueError, match=r"unknown UMGFConfig fields \['no_such_field'\]"):
        parse_config_overrides("no_such_field=1")
    with pytest.raises(ValueError, match="expected key=value"):
        parse_config_overrides("hidden_size")


@pytest.mark.parametrize("name", sorted(PRESET_RECORDS))
def test_the_preset_of_a_saved_model_is_read_from_its_config(name: str) -> None:
    config = UMGFConfig.from_preset(name)
    assert preset_of(config, PRESET_RECORDS[name].grounder) == name


def test_the_synthetic_job_grounds_its_symbols_unless_a_preset_asks_for_grid_cells() -> None:
    assert [SYNTHETIC_JOB.grounder_for(g) for g in ("detector", "release", "grid")] == ["symbols", "symbols", "grid"]
