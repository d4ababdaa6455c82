"""Inference Endpoints custom handler for a UMGF model repo (copied to the repo root by `modeling_umgf.hub`).

Request: ``{"inputs": "text", "image": "<base64 image>", "grounding": {...}, "parameters": {...}}``. ``image`` is
optional (text-only tagging) and may be plain base64, a ``data:image/...;base64,`` URI or an ``http(s)://`` URL;
``grounding`` is optional precomputed grounding columns (CONTRACT.md); ``inputs`` may be a list of texts, with
``image`` and ``grounding`` lists of the same length (None for a post without one). ``parameters`` are the
pipeline's: ``return_words``, ``grounder`` (a grounder name instead of the model's own), ``batch_size``,
``precision`` (``"auto"``, ``"fp32"``, ``"bf16"``, ``"int8"``; the default is the ``UMGF_PRECISION`` environment
variable, else ``"auto"``: bf16 where the hardware has bfloat16 units, fp32 elsewhere).
Response: the "multimodal-ner" pipeline's entities (a list per text when ``inputs`` is a list). An image that
cannot be read is an error naming it, not a silent text-only answer.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import pipeline


class EndpointHandler:
    """Loads the repo's "multimodal-ner" pipeline (its remote code) once; each call tags one post or a batch."""

    def __init__(self, path: str = "") -> None:
        precision = os.environ.get("UMGF_PRECISION", "auto")
        self.pipeline = pipeline(model=path or ".", trust_remote_code=True, precision=precision)

    def _image(self, image: Any) -> Any:
        """The decoded image (the pipeline's own loader), or a ValueError saying why it cannot be read."""
        if image is None:
            return None
        if not isinstance(image, str):
            raise ValueError(f"'image' must be a base64 string or a URL, got {type(image).__name__}")
        return self.pipeline.load_image(image)

    def __call__(self, data: dict[str, Any]) -> list[Any]:
        if not isinstance(data, dict) or "inputs" not in data:
            raise ValueError('the request must be a JSON object with "inputs" (text or list of texts)')
        inputs, image, grounding = data["inputs"], data.get("image"), data.get("grounding")
        parameters = dict(data.get("parameters") or {})
        if isinstance(inputs, str):
            samples: Any = {"text": inputs, "image": self._image(image), "grounding": grounding}
        elif isinstance(inputs, list) and all(isinstance(text, str) for text in inputs):
            extras = {}
            for name, value in (("image", image), ("grounding", grounding)):
                values = [None] * len(inputs) if value is None else value
                if not isinstance(values, list) or len(values) != len(inputs):
                    raise ValueError(f'with {len(inputs)} texts, "{name}" must be a list of {len(inputs)} (or None)')
                extras[name] = values
            samples = [
                {"text": text, "image": self._image(i), "grounding": g}
                for text, i, g in zip(inputs, extras["image"], extras["grounding"])
            ]
        else:
            raise ValueError('"inputs" must be a string or a list of strings')
        return self.pipeline(samples, **parameters)
