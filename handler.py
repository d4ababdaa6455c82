"""Inference Endpoints custom handler for a UMGF model repo (copied to the repo root by `modeling_umgf.hub`).

Request: ``{"inputs": "text", "image": "<base64 image>", "grounding": {...}, "parameters": {...}}``, or the
Inference Endpoints form with the fields inside ``{"inputs": {"text": ..., "image": ..., "grounding": ...}}`` (or a list
of such objects; ``"words"`` may replace ``"text"``). ``image`` is
optional (text-only tagging) and may be plain base64, a ``data:image/...;base64,`` URI or an ``http(s)://`` URL;
``grounding`` is optional precomputed grounding columns (CONTRACT.md); ``inputs`` may be a list of texts, with
``image`` and ``grounding`` lists of the same length (None for a post without one). ``parameters`` are the
pipeline's: ``return_words``, ``grounder`` (a grounder name instead of the model's own), ``batch_size``.
Response: the "multimodal-ner" pipeline's entities (a list per text when ``inputs`` is a list); with
``return_words`` each post's full record ``{"text", "entities", "words", "objects", "truncated_words"}``. An image
that cannot be read is an error naming it, not a silent text-only answer; a model without a visual branch ignores
images (with a warning).
"""

from __future__ import annotations

from typing import Any

from transformers import pipeline


class EndpointHandler:
    """Loads the repo's "multimodal-ner" pipeline (its remote code) once; each call tags one post or a batch."""

    def __init__(self, path: str = "") -> None:
        self.pipeline = pipeline(model=path or ".", trust_remote_code=True)

    def _image(self, image: Any) -> Any:
        """The decoded image (the pipeline's own loader), or a ValueError saying why it cannot be read."""
        if image is None:
            return None
        if not isinstance(image, str):
            raise ValueError(f"'image' must be a base64 string or a URL, got {type(image).__name__}")
        return self.pipeline.load_image(image)

    def _post(self, post: Any, where: str) -> dict[str, Any]:
        """One post given as an object ``{"text" | "words", "image", "grounding"}`` (the Endpoints form)."""
        unknown = sorted(set(post) - {"text", "words", "image", "grounding", "id"})
        if unknown or ("text" in post) == ("words" in post):
            raise ValueError(
                f'{where} must have "text" (or "words") and optionally "image" and "grounding"'
                + (f", not {unknown}" if unknown else "")
            )
        return {**post, "image": self._image(post.get("image"))}

    def __call__(self, data: dict[str, Any]) -> list[Any]:
        if not isinstance(data, dict) or "inputs" not in data:
            raise ValueError('the request must be a JSON object with "inputs" (text or list of texts)')
        inputs, image, grounding = data["inputs"], data.get("image"), data.get("grounding")
        parameters = dict(data.get("parameters") or {})
        return_words = bool(parameters.pop("return_words", False))
        results = self.pipeline(self._samples(inputs, image, grounding), **parameters)
        if not return_words:
            return results
        return [r.to_dict() for r in results] if isinstance(inputs, list) else results.to_dict()

    def _samples(self, inputs: Any, image: Any, grounding: Any) -> Any:
        """The pipeline's inputs for the request's ``inputs`` (one post or a list) and top-level extras."""
        if isinstance(inputs, dict) or (
            isinstance(inputs, list) and inputs and all(isinstance(i, dict) for i in inputs)
        ):
            if image is not None or grounding is not None:
                raise ValueError('with "inputs" objects, give "image" and "grounding" inside each object')
            if isinstance(inputs, dict):
                return self._post(inputs, '"inputs"')
            return [self._post(post, f'"inputs"[{index}]') for index, post in enumerate(inputs)]
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
            raise ValueError('"inputs" must be a string, a list of strings, or {"text", "image"} objects')
        return samples
