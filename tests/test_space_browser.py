"""The Gradio Space in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by
Selenium loads the page, submits an example with an image, and finds the entities and the boxed image on the page.

Skipped, with the reason, where no browser, driver or Selenium is installed (CI installs them when it can). Set
``UMGF_SCREENSHOT=path.png`` to keep the screenshot, and ``UMGF_SPACE_MODEL=folder`` to show another model than the
tiny test model (a folder with ``examples/``, as the main job writes): the README's picture of the Space is made so.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
gr = pytest.importorskip("gradio")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip("no headless Chromium (apt-get install chromium chromium-driver)", allow_module_level=True)

import json  # noqa: E402

from PIL import Image  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from test_pipeline import quadrant_image  # noqa: E402
from transformers import pipeline  # noqa: E402

from modeling_umgf.tools import hub  # noqa: E402
from modeling_umgf.tools.tiny_models import tiny_ner_pipeline  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def model_folder(tmp_path) -> Path:
    """UMGF_SPACE_MODEL, or a tiny model whose folder holds one example post with an image."""
    if os.environ.get("UMGF_SPACE_MODEL"):
        return Path(os.environ["UMGF_SPACE_MODEL"])
    folder = tmp_path / "model"
    tiny_ner_pipeline().save_pretrained(folder)
    hub.write_examples(folder, [("Kawhi Leonard wins the fan vote", quadrant_image())])
    return folder


@pytest.fixture
def page(tmp_path, model_folder):
    """The Space of ``model_folder``, open in Chromium."""
    folder = model_folder
    spec = importlib.util.spec_from_file_location("umgf_space_app", Path(__file__).parent.parent / "spaces" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    demo = app.build_demo(str(folder))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1300",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.demo = demo  # the served demo, whose pipeline a test may break on purpose
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        yield driver
    finally:
        driver.quit()
        demo.close()


def wait_for(condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError("timed out waiting for the page")


def test_an_example_with_an_image_shows_its_entities_and_boxes(page, model_folder, tmp_path) -> None:
    first = json.loads((model_folder / "examples" / "examples.json").read_text())[0]
    text, image = first["text"], Image.open(model_folder / "examples" / first["image"])
    expected = pipeline(model=str(model_folder), trust_remote_code=True)(text, image=image)
    assert expected and any(e["boxes"] for e in expected)
    example = wait_for(lambda: page.find_elements(By.XPATH, f"//div[contains(@class, 'table')][contains(., '{text}')]"))
    images_before = len(page.find_elements(By.TAG_NAME, "img"))
    example[-1].click()  # fills the post and the image
    wait_for(lambda: page.find_element(By.TAG_NAME, "textarea").get_attribute("value") == text)
    wait_for(lambda: len(page.find_elements(By.TAG_NAME, "img")) > images_before)  # the example's image
    page.find_element(By.XPATH, "//button[contains(., 'Find entities')]").click()
    # every box that feeds an entity is labelled with the entity attending to it most
    labels = {f"{e['entity_group']}: {e['word']}" for e in expected if e["boxes"]}
    text_on_page = wait_for(
        lambda: (
            (body := page.find_element(By.TAG_NAME, "body").text) and any(label in body for label in labels) and body
        )
    )
    for entity in expected:  # the highlighted post: each entity's words with its type and its score
        assert entity["word"] in text_on_page and f"{entity['entity_group']} {entity['score']:.2f}" in text_on_page
    boxed = page.find_elements(By.XPATH, "//*[contains(., 'Grounded boxes')]//img")
    assert boxed, "the boxed image is not on the page"
    shot = tmp_path / "space.png"
    page.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("UMGF_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["UMGF_SCREENSHOT"])


def test_a_failing_grounder_is_shown_with_its_reason(page, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("cannot reach the Hub to download the detector (offline)")

    monkeypatch.setattr(page.demo.pipeline, "preprocess", offline)
    wait_for(lambda: page.find_elements(By.TAG_NAME, "textarea"))
    page.find_element(By.TAG_NAME, "textarea").send_keys("Kawhi Leonard wins the fan vote")
    page.find_element(By.XPATH, "//button[contains(., 'Find entities')]").click()
    body = wait_for(
        lambda: (text := page.find_element(By.TAG_NAME, "body").text) and "cannot reach the Hub" in text and text
    )
    assert "OSError: cannot reach the Hub to download the detector (offline)" in body
    if os.environ.get("UMGF_ERROR_SCREENSHOT"):
        page.save_screenshot(os.environ["UMGF_ERROR_SCREENSHOT"])
