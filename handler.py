"""Inference Endpoints custom handler for a UMGF model repo (copied to the repo root by `modeling_umgf.tools.hub`).

Request: ``{"inputs": "text", "image": "<base64 image>", "grounding": {...}, "parameters": {...}}``, or the
Inference Endpoints form with the fields inside ``{"inputs": {"text": ..., "image": ..., "grounding": ...}}`` (or a list
of such objects; ``"words"`` may replace ``"text"``). ``image`` is optional (text-only tagging) and may be plain base64
or a ``data:image/...;base64,`` URI; an ``http(s)://`` URL only when the endpoint sets ``UMGF_HANDLER_ALLOW_URLS=1``
(the server then downloads what a caller names). Nothing else is read: a file path is refused, without saying whether
it exists. Images over the pixel budget (``UMGF_MAX_IMAGE_PIXELS``, see SECURITY.md) are refused from their header,
before decoding; ``grounding`` is optional precomputed grounding columns (CONTRACT.md); ``inputs`` may be a list of
texts, with ``image`` and ``grounding`` lists of the same length (None for a post without one). ``parameters`` are the
pipeline's: ``return_words`` (true/false), ``grounder`` (a grounder name instead of the model's own), ``batch_size``,
``precision`` (``"auto"``, ``"fp32"``, ``"bf16"``, ``"int8"``; the default is the ``UMGF_PRECISION`` environment
variable, else ``"auto"``: bf16 where the hardware has bfloat16 units, fp32 elsewhere).
Response: the "multimodal-ner" pipeline's entities (a list per text when ``inputs`` is a list); with
``return_words`` each post's full record ``{"text", "entities", "words", "objects", "truncated_words"}``. An image
that cannot be read is an error naming it, not a silent text-only answer; a model without a visual branch ignores
images (with a warning).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from transformers import pipeline

ALLOW_URLS_VARIABLE = "UMGF_HANDLER_ALLOW_URLS"
"""Set to 1 (or true/yes) to let requests give images as http(s) URLs, which the endpoint then downloads."""

PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "return_words": (bool,),
    "grounder": (str,),
    "batch_size": (int,),
    "precision": (str,),
    "aggregation_strategy": (str,),
    "ignore_labels": (list,),
}
"""The request parameters the handler passes on to the pipeline, and their JSON types."""


def urls_allowed() -> bool:
    """Whether image URLs are enabled (`ALLOW_URLS_VARIABLE`)."""
    return os.environ.get(ALLOW_URLS_VARIABLE, "").strip().lower() in ("1", "true", "yes")


def request_image_bytes(image: str, decode: Callable[[str], bytes | None]) -> bytes | str:
    """The encoded image a request carries (base64 or a data URI, read by ``decode``), or the URL when URLs are
    enabled; a ValueError for anything else. Never looks at the server's files, so its errors cannot tell whether a
    path exists."""
    if image.startswith(("http://", "https://")):
        if not urls_allowed():
            raise ValueError(f"image URLs are disabled on this endpoint (set {ALLOW_URLS_VARIABLE}=1 to allow them)")
        return image
    encoded = decode(image)
    if encoded is None:
        raise ValueError(
            "'image' must be base64 image data or a data:image/...;base64, URI"
            + (" (or an http(s) URL)" if urls_allowed() else "")
        )
    return encoded


def request_parameters(parameters: Any) -> dict[str, Any]:
    """The request's ``parameters`` checked: an object whose keys are in `PARAMETER_TYPES`, values of their type."""
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ValueError(f'"parameters" must be a JSON object, got {type(parameters).__name__}')
    for key, value in parameters.items():
        if key not in PARAMETER_TYPES:
            raise ValueError(f"unknown parameter {key!r}; known: {sorted(PARAMETER_TYPES)}")
        types = PARAMETER_TYPES[key]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise ValueError(f'parameter "{key}" must be a {types[0].__name__}, got {json_type(value)} {value!r:.80}')
    if parameters.get("batch_size", 1) < 1:
        raise ValueError(f'parameter "batch_size" must be >= 1, got {parameters["batch_size"]}')
    return dict(parameters)


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


class EndpointHandler:
    """Loads the repo's "multimodal-ner" pipeline (its remote code) once; each call tags one post or a batch."""

    def __init__(self, path: str = "") -> None:
        precision = os.environ.get("UMGF_PRECISION", "auto")
        self.pipeline = pipeline(model=path or ".", trust_remote_code=True, precision=precision)

    def _image(self, image: Any) -> Any:
        """The encoded image a request carries (`request_image_bytes`), not decoded yet, or a ValueError."""
        if image is None:
            return None
        if not isinstance(image, str):
            raise ValueError(f"'image' must be a base64 string, got {json_type(image)}")
        return request_image_bytes(image, self.pipeline.encoded_image_bytes)

    def __call__(self, data: dict[str, Any]) -> list[Any]:
        if not isinstance(data, dict) or "inputs" not in data:
            raise ValueError('the request must be a JSON object with "inputs" (text or list of texts)')
        inputs, image, grounding = data["inputs"], data.get("image"), data.get("grounding")
        parameters = request_parameters(data.get("parameters"))
        return_words = parameters.pop("return_words", False)
        results = self.pipeline(self._samples(inputs, image, grounding), **parameters)
        if not return_words:
            return results
        return [r.to_dict() for r in results] if isinstance(inputs, list) else results.to_dict()

    def _samples(self, inputs: Any, image: Any, grounding: Any) -> Any:
        """The request's posts (one or a list), checked and their images decoded once by the pipeline's
        `read_post`, which refuses an unreadable image instead of tagging the post text-only."""
        objects = isinstance(inputs, dict) or (
            isinstance(inputs, list) and bool(inputs) and all(isinstance(i, dict) for i in inputs)
        )
        if objects and (image is not None or grounding is not None):
            raise ValueError('with "inputs" objects, give "image" and "grounding" inside each object')
        if isinstance(inputs, list) and not inputs:
            raise ValueError('"inputs" is an empty list: give a text or a non-empty list of texts')
        texts = isinstance(inputs, str) or (isinstance(inputs, list) and all(isinstance(t, str) for t in inputs))
        if not objects and not texts:
            raise ValueError('"inputs" must be a string, a list of strings, or {"text", "image"} objects')
        posts = inputs if objects else self.pipeline.with_extras(inputs, image, grounding)
        if isinstance(posts, dict):
            return self._post(posts, '"inputs"')
        return [self._post(post, f'"inputs"[{index}]') for index, post in enumerate(posts)]

    def _post(self, post: dict[str, Any], where: str) -> Any:
        """One post as the pipeline reads it, its image given as encoded bytes (never as a path)."""
        return self.pipeline.read_post({**post, "image": self._image(post.get("image"))}, where, strict=True)
