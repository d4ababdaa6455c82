"""Fixtures and hooks of the test suite (CPU, offline, no downloads); shared helpers are in helpers.py and
`modeling_umgf.tools.tiny_models`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twitter_fixtures import FIXTURES, IMAGE_PLAN, write_image

from datasets_scripts.twitter_mner import build_dataset
from modeling_umgf import UMGFConfig
from modeling_umgf.tools.tiny_models import tiny_config


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Twitter-2017 fixture images, written as `IMAGE_PLAN` says."""
    folder = tmp_path_factory.mktemp("twitter2017_images")
    for image_id, kind in IMAGE_PLAN.items():
        write_image(folder / f"{image_id}.jpg", kind)
    return folder


@pytest.fixture(scope="session")
def built(image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The three builder configs over the fixtures (read-only: built once per session)."""
    cache = tmp_path_factory.mktemp("cache")
    return {
        "twitter2015": build_dataset("twitter2015", FIXTURES, None, cache),
        "twitter2017": build_dataset("twitter2017", FIXTURES, image_dir, cache),
        "twitter2017c": build_dataset("twitter2017c", FIXTURES, image_dir, cache),
    }


@pytest.fixture
def config() -> UMGFConfig:
    """A tiny UMGF config (`tiny_config`)."""
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
