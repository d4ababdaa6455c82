"""Gradio demo of a UMGF model: a post and its image in; the highlighted entities, the image with the grounded
boxes that support them, and the pipeline's full output out.

The model is the ``UMGF_MODEL`` environment variable (a Hub repo id or a folder); its "multimodal-ner" pipeline
runs as Hub remote code, so the Space needs no umgf package: the entity colours, the box labels and the grounders
come from the pipeline itself. The grounder can be chosen (the model's own by default). Examples with images are
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


def build_demo(model: str = MODEL) -> gr.Blocks:
    """The demo's interface around the model's multimodal-ner pipeline (loaded once)."""
    ner = pipeline(model=model, trust_remote_code=True)
    own = ner.processor.grounder

    def predict(text: str, image: Image.Image | None, grounder: str):
        if not text or not text.strip():
            raise gr.Error("Enter the text of a post.")
        choice = None if grounder.startswith(OWN_GROUNDER) else grounder
        result = ner({"text": text, "image": image}, return_words=True, grounder=choice)
        entities = result["entities"]
        highlighted = {
            "text": text,
            "entities": [{"entity": e["entity_group"], "start": e["start"], "end": e["end"]} for e in entities],
        }
        annotated = (image, ner.box_annotations(entities)) if image is not None else None
        return highlighted, gr.AnnotatedImage(value=annotated, color_map=ner.entity_colours(entities)), result

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
                    choices=[f"{OWN_GROUNDER} ({own})", *[g for g in ner.available_grounders() if g != own]],
                    value=f"{OWN_GROUNDER} ({own})",
                )
                button = gr.Button("Find entities", variant="primary")
            with gr.Column():
                highlighted = gr.HighlightedText(
                    label="Entities", color_map=ner.entity_colours(), combine_adjacent=False
                )
                boxes = gr.AnnotatedImage(label="Grounded boxes")
        raw = gr.JSON(label="Pipeline output (scores, words, boxes with alpha)")
        gr.Examples(examples=model_examples(model) or TEXT_EXAMPLES, inputs=[text, image], label="Examples")
        button.click(predict, inputs=[text, image, grounder], outputs=[highlighted, boxes, raw], api_name="predict")
    return demo


if __name__ == "__main__":
    build_demo().launch()
