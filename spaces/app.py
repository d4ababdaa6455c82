"""Gradio demo of a UMGF model: a post and its image in; the highlighted entities, the image with the grounded
boxes that support them, and the pipeline's full output out.

The model is the ``UMGF_MODEL`` environment variable (a Hub repo id or a folder); its "multimodal-ner" pipeline
runs as Hub remote code, so the Space needs no umgf package: the entity colours, the box labels and the grounders
come from the pipeline itself. The grounder can be chosen among those that can work here (the model's own first;
never "precomputed", which needs boxes a typed post does not have; the detector only when its weights are on this
machine; none for a text-only model), with a note when it is not the one the model was trained with. Errors are
shown with their reason; every entity is highlighted with its score. Examples with images are
the model's own (``examples/examples.json`` in its folder or repo, written by ``train_umgf.py``), else text-only.
Run locally with ``UMGF_MODEL=path/or/repo python spaces/app.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gradio as gr
from PIL import Image
from transformers import pipeline

MODEL = os.environ.get("UMGF_MODEL", "umgf/umgf-twitter2017")
TEXT_EXAMPLES = [["Kawhi Leonard wins the fan vote for Block of the Year ! #NBAAwards", None]]
OWN_GROUNDER = "the model's own"


def model_examples(model: str) -> list[list[str | None]]:
    """``[text, image path]`` pairs listed in the model's ``examples/examples.json`` (a folder or a Hub repo)."""
    folder = Path(model)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(model, allow_patterns=["examples/*"]))
        except Exception:  # no examples in the repo, or the Hub unreachable: the demo still works without them
            return []
    listing = folder / "examples" / "examples.json"
    if not listing.is_file():
        return []
    return [[item["text"], str(folder / "examples" / item["image"])] for item in json.loads(listing.read_text())]


def grounder_choices(ner) -> list[str]:
    """The grounders offered: the pipeline's usable ones (older pipelines: all but "precomputed"), the model's own
    first and named so."""
    own = ner.processor.grounder
    usable = getattr(ner, "usable_grounders", None)
    names = usable() if usable else [own, *(g for g in ner.available_grounders() if g not in (own, "precomputed"))]
    return [f"{OWN_GROUNDER} ({name})" if name == own else name for name in names]


def grounder_note(own: str, chosen: str | None, image: Image.Image | None, visual: bool) -> str:
    """What the reader should know about the grounding of this answer."""
    if not visual:
        return "This model has no visual branch: it reads the text only, and an image is ignored."
    if chosen and chosen != own and image is not None:
        return (
            f"Note: the model was trained with the `{own}` grounder; `{chosen}` gives it other objects than the ones "
            "it learned from, so its tags can change for that reason alone."
        )
    return ""


def highlighted_entities(text: str, entities: list[dict], colours: dict[str, str]) -> tuple[dict, dict[str, str]]:
    """The HighlightedText value, each entity labelled with its type and score, and the colours of those labels
    (``colours``: per entity type)."""
    labels = [f"{e['entity_group']} {e['score']:.2f}" for e in entities]
    value = {
        "text": text,
        "entities": [{"entity": label, "start": e["start"], "end": e["end"]} for label, e in zip(labels, entities)],
    }
    return value, {label: colours.get(e["entity_group"], "#808080") for label, e in zip(labels, entities)}


def build_demo(model: str = MODEL) -> gr.Blocks:
    """The demo's interface around the model's multimodal-ner pipeline (loaded once)."""
    ner = pipeline(model=model, trust_remote_code=True)
    own = ner.processor.grounder
    visual = bool(getattr(ner.model.config, "use_visual", True))
    choices = grounder_choices(ner)

    def predict(text: str, image: Image.Image | None, grounder: str | None):
        if not text or not text.strip():
            raise gr.Error("Enter the text of a post.")
        choice = None if not grounder or grounder.startswith(OWN_GROUNDER) else grounder
        try:
            result = ner({"text": text, "image": image if visual else None}, grounder=choice)
        except Exception as error:  # shown in the page with its reason, not as a bare "Error"
            reason = str(error).splitlines()[0] if str(error) else ""
            raise gr.Error(f"{type(error).__name__}: {reason}" + (f" (grounder {choice})" if choice else "")) from error
        entities = result["entities"]
        value, colours = highlighted_entities(text, entities, ner.entity_colours())
        annotated = (image, ner.box_annotations(entities)) if image is not None and visual else None
        details = result.to_dict() if hasattr(result, "to_dict") else result
        return (
            gr.HighlightedText(value=value, color_map=colours),
            gr.AnnotatedImage(value=annotated, color_map=ner.entity_colours(entities)),
            details,
            grounder_note(own, choice, image, visual),
        )

    with gr.Blocks(title="UMGF: multimodal named entity recognition") as demo:
        gr.Markdown(
            "# UMGF: multimodal named entity recognition\n"
            "Entities (PER, LOC, ORG, MISC) in a post, using its image when there is one. Boxes are the image "
            "regions grounded from the post and linked to an entity's words, labelled with the entity that "
            "attends to them most (gate alpha, eq 4 of Zhang et al., AAAI 2021)."
        )
        with gr.Row():
            with gr.Column():
                text = gr.Textbox(label="Post", lines=3)
                image = gr.Image(label="Image (optional)", type="pil")
                grounder = gr.Dropdown(
                    label="Grounder",
                    choices=choices,
                    value=choices[0] if choices else None,
                    visible=bool(choices),
                )
                button = gr.Button("Find entities", variant="primary")
            with gr.Column():
                highlighted = gr.HighlightedText(
                    label="Entities", color_map=ner.entity_colours(), combine_adjacent=False
                )
                boxes = gr.AnnotatedImage(label="Grounded boxes")
                note = gr.Markdown(grounder_note(own, None, None, visual))
        raw = gr.JSON(label="Pipeline output (scores, words, boxes with alpha)")
        demo.pipeline = ner  # type: ignore[attr-defined]  # for tests and scripts
        gr.Examples(examples=model_examples(model) or TEXT_EXAMPLES, inputs=[text, image], label="Examples")
        button.click(
            predict, inputs=[text, image, grounder], outputs=[highlighted, boxes, raw, note], api_name="predict"
        )
    return demo


if __name__ == "__main__":
    build_demo().launch()
