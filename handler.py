"""Inference Endpoints custom handler for a UMGF model repo (copied to the repo root by `modeling_umgf.hub`).

Request: ``{"inputs": "text", "image": "<base64 image>", "parameters": {"return_words": false}}``; ``image`` is
optional (text-only tagging), may be a ``data:image/...;base64,`` URI or an ``http(s)://`` URL, and ``inputs`` may
be a list of texts with ``image`` a list of the same length (None for a post without image).
Response: the "multimodal-ner" pipeline's entities (a list per text when ``inputs`` is a list).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from transformers import pipeline


def decode_image(image: Any) -> bytes | str | None:
    """Base64 (plain or as a data URI) -> bytes; URLs and None pass through."""
    if image is None or (isinstance(image, str) and image.startswith(("http://", "https://"))):
        return image
    if not isinstance(image, str):
        raise ValueError(f"'image' must be a base64 string or a URL, got {type(image).__name__}")
    data = image.split(",", 1)[1] if image.startswith("data:") else image
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as error:
        raise ValueError(f"'image' is not valid base64: {error}") from error


class EndpointHandler:
    """Loads the repo's "multimodal-ner" pipeline (its remote code) once; each call tags one post or a batch."""

    def __init__(self, path: str = "") -> None:
        self.pipeline = pipeline(model=path or ".", trust_remote_code=True)

    def __call__(self, data: dict[str, Any]) -> list[Any]:
        if not isinstance(data, dict) or "inputs" not in data:
            raise ValueError('the request must be a JSON object with "inputs" (text or list of texts)')
        inputs, image = data["inputs"], data.get("image")
        parameters = dict(data.get("parameters") or {})
        if isinstance(inputs, str):
            samples: Any = {"text": inputs, "image": decode_image(image)}
        elif isinstance(inputs, list) and all(isinstance(text, str) for text in inputs):
            images = [None] * len(inputs) if image is None else image
            if not isinstance(images, list) or len(images) != len(inputs):
                raise ValueError(f'with {len(inputs)} texts, "image" must be a list of {len(inputs)} images (or None)')
            samples = [{"text": text, "image": decode_image(i)} for text, i in zip(inputs, images)]
        else:
            raise ValueError('"inputs" must be a string or a list of strings')
        return self.pipeline(samples, **parameters)
