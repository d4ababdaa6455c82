"""Gradio demo of a UMGF model: a post and its image in; the highlighted entities, the image with the grounded
boxes that support them, and the pipeline's full output out.

The model is the ``UMGF_MODEL`` environment variable (a Hub repo id or a folder); its "multimodal-ner" pipeline
runs as Hub remote code, so the Space needs no umgf package: the entity colours and the box labels come from the
pipeline itself. Run locally with ``python spaces/app.py``.
"""

from __future__ import annotations

import os

import gradio as gr
from PIL import Image
from transformers import pipeline

MODEL = os.environ.get("UMGF_MODEL", "umgf/umgf-twitter2017")
EXAMPLE = "Kawhi Leonard wins the fan vote for Block of the Year ! #NBAAwards"


def build_demo(model: str = MODEL) -> gr.Blocks:
    """The demo's interface around the model's multimodal-ner pipeline (loaded once)."""
    ner = pipeline(model=model, trust_remote_code=True)

    def predict(text: str, image: Image.Image | None):
        if not text or not text.strip():
            raise gr.Error("Enter the text of a post.")
        result = ner({"text": text, "image": image}, return_words=True)
        highlighted = {
            "text": text,
            "entities": [
                {"entity": e["entity_group"], "start": e["start"], "end": e["end"]} for e in result["entities"]
            ],
        }
        annotated = (image, ner.box_annotations(result["entities"])) if image is not None else None
        return highlighted, annotated, result

    with gr.Blocks(title="UMGF: multimodal named entity recognition") as demo:
        gr.Markdown(
            "# UMGF: multimodal named entity recognition\n"
            "Entities (PER, LOC, ORG, MISC) in a post, using its image when there is one. Boxes are the image "
            "regions grounded from the post and linked to an entity's words, labelled with the entity that "
            "attends to them most (gate alpha, eq 4 of Zhang et al., AAAI 2021)."
        )
        with gr.Row():
            with gr.Column():
                text = gr.Textbox(label="Post", value=EXAMPLE, lines=3)
                image = gr.Image(label="Image (optional)", type="pil")
                button = gr.Button("Find entities", variant="primary")
            with gr.Column():
                highlighted = gr.HighlightedText(
                    label="Entities", color_map=ner.entity_colours(), combine_adjacent=False
                )
                boxes = gr.AnnotatedImage(label="Grounded boxes")
        raw = gr.JSON(label="Pipeline output (scores, words, boxes with alpha)")
        button.click(predict, inputs=[text, image], outputs=[highlighted, boxes, raw], api_name="predict")
    return demo


if __name__ == "__main__":
    build_demo().launch()
