"""Shared test helpers: tiny UMGF configurations and inputs (CPU, offline, no downloads)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import BertConfig

from modeling_umgf import UMGFConfig
from modeling_umgf.configuration_umgf import PRESETS

TINY_IMAGE = 32
#: The switches of the authors' released network (the "release" preset) that change what the fusion layers compute.
RELEASE_SWITCHES = {
    key: PRESETS["release"][key]
    for key in (
        "text_node_projection",
        "visual_mlp_output_activation",
        "visual_value_projection",
        "gate_layer_norm",
        "link_special_tokens",
        "classifier_input",
        "use_position_encoding",
    )
}

_BLOCK_PACKAGE = """
import importlib.abc, sys
class _NoUmgf(importlib.abc.MetaPathFinder):  # as if the umgf package were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("modeling_umgf", "datasets_scripts", "train_umgf"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, _NoUmgf())
"""


def run_without_package(script: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh, offline Python process where the umgf packages cannot be imported (even when
    installed, e.g. editable): what a user who only has the saved folder and ``trust_remote_code`` sees."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(Path(cwd) / "hf_modules"))
    return subprocess.run(
        [sys.executable, "-c", _BLOCK_PACKAGE + script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tiny_bert_config(**overrides) -> BertConfig:
    """A 1-layer, 32-d BERT config with 64 positions (the tests' text encoder); ``overrides`` are BertConfig fields."""
    fields = dict(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    fields.update(overrides)
    return BertConfig(**fields)


def tiny_encoders() -> dict:
    """The encoders of the test configs: a 1-layer BERT (32-d) and timm's test_resnet (96-d) on tiny crops."""
    return dict(
        text_config=tiny_bert_config(),
        vision_backbone="test_resnet",
        vision_feature_dim=96,
        vision_image_size=TINY_IMAGE,
    )


def tiny_config(**overrides) -> UMGFConfig:
    """A UMGF config small enough for CPU tests: `tiny_encoders`, d=16."""
    kwargs = dict(
        **tiny_encoders(),
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=32,
        dropout=0.1,
    )
    kwargs.update(overrides)
    return UMGFConfig(**kwargs)


def save_tiny_text_encoder(folder: Path) -> Path:
    """Save a random 1-layer BERT and the synthetic task's tokenizer to ``folder``: a local pretrained-style text
    encoder (``--text_model_name_or_path``)."""
    from transformers import BertModel

    from datasets_scripts.synthetic import build_tokenizer

    tokenizer = build_tokenizer(folder)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def tiny_inputs(batch: int = 2, tokens: int = 8, objects: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random model inputs with ragged lengths: padded tokens, padded objects, a sparse adjacency."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, 120, (batch, tokens), generator=g)
    attention_mask = torch.ones(batch, tokens, dtype=torch.long)
    word_ids = torch.full((batch, tokens), -1, dtype=torch.long)
    object_mask = torch.zeros(batch, objects, dtype=torch.long)
    for b in range(batch):
        length = tokens - b  # later items are shorter
        attention_mask[b, length:] = 0
        input_ids[b, length:] = 0
        # [CLS] w0 w1 w1 w2 ... [SEP]: the second word has two sub-tokens
        words = [0, 1, 1] + list(range(2, length - 4 + 2))
        word_ids[b, 1 : length - 1] = torch.tensor(words[: length - 2])
        object_mask[b, : max(objects - b, 0)] = 1
    adjacency = (torch.rand(batch, tokens, objects, generator=g) > 0.4).long() * attention_mask[:, :, None]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "word_ids": word_ids,
        "pixel_values": torch.randn(batch, objects, 3, TINY_IMAGE, TINY_IMAGE, generator=g),
        "object_mask": object_mask,
        "inter_modal_adjacency": adjacency,
    }


@pytest.fixture
def config() -> UMGFConfig:
    return tiny_config()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "assumes(package, versions, behaviour): the test depends on a third-party behaviour, checked on those versions",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failing test marked ``assumes`` names the third-party behaviour and versions it assumed and the installed one."""
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("assumes")
    if marker is not None and report.failed:
        from importlib.metadata import version

        package, versions, behaviour = marker.args
        report.sections.append(
            (
                "third-party assumption",
                f"this test assumes {behaviour} ({package} {versions}); installed: {package} {version(package)}",
            )
        )
