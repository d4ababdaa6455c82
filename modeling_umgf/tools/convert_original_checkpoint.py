"""Convert a checkpoint of the authors' UMGF code into a Hugging Face model folder of the "release" preset.

    python -m modeling_umgf.tools.convert_original_checkpoint --checkpoint ddp_mner.pt --output_dir umgf-twitter2015 \\
        [--text_model_name_or_path bert-base-cased] [--dataset twitter2015]

The authors (github.com/TransformersWsz/UMGF) released the state dicts of their trained ``MMNerModel``
(``ddp_mmner.py``) for Twitter-2015 and Twitter-2017, saved with ``torch.save(model.state_dict())``. Their network
is this package's ``release`` preset, parameter for parameter; this script renames and reshapes the tensors
(their separate query / key / value maps become one ``qkv`` map; the gate's ``Linear(2d, d)`` on
``[receiver; sender]`` becomes ``w_self`` + ``w_other``) and writes a folder that
``AutoModelForTokenClassification.from_pretrained(folder, trust_remote_code=True)``, ``AutoProcessor`` and
``pipeline(model=folder, trust_remote_code=True)`` load.

The checkpoint is a pickle: it is read with ``torch.load(..., weights_only=True)``, which loads tensors and refuses
to run code. The text encoder's configuration and tokenizer come from ``--text_model_name_or_path`` (their code
used bert-base-cased); when it cannot be loaded (offline), the configuration is read off the checkpoint's shapes
and the folder is written without the processor, with a message saying how to add it.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, BertConfig

from ..configuration_umgf import PRESET_GROUNDERS, UMGFConfig
from ..image_processing_umgf import UMGFImageProcessor
from ..modeling_umgf import UMGFForTokenClassification
from ..processing_umgf import UMGFProcessor

logger = logging.getLogger(__name__)

#: Tensors of the authors' state dict that this model does not have: BERT's pooler (its output is never used)
#: and the position-id buffer that transformers 3.x saved with BERT.
IGNORED = re.compile(r"^bert\.(pooler\.|embeddings\.position_ids$)")
#: Their fusion-layer modules, by the name of this model's module that holds the same tensors.
LAYER_NORMS = {
    "res4mes_x": "text.attention.norm",
    "res4mes_o": "visual.attention.norm",
    "xgate": "text.gate.norm",
    "ogate": "visual.gate.norm",
    "res4ffn_x": "text.ffn.norm",
    "res4ffn_o": "visual.ffn.norm",
}
FEED_FORWARD = {"ffn_x": "text.ffn", "ffn_o": "visual.ffn"}
RESNET_DEPTHS = {
    (3, 4, 6, 3): "resnet50.tv_in1k",
    (3, 4, 23, 3): "resnet101.tv_in1k",
    (3, 8, 36, 3): "resnet152.tv_in1k",
}
NUM_HEADS = 8  # MMNerModel's n_heads (not visible in the weights)


def num_fusion_layers(state_dict: Mapping[str, torch.Tensor]) -> int:
    """L, from the number of text attention modules ``mhatt_x.<i>``."""
    layers = {int(m.group(1)) for key in state_dict if (m := re.match(r"mhatt_x\.(\d+)\.", key))}
    if not layers:
        raise ValueError("not a state dict of the authors' MMNerModel: no mhatt_x.<layer> tensors")
    return max(layers) + 1


def text_config_from_weights(state_dict: Mapping[str, torch.Tensor]) -> BertConfig:
    """A BERT configuration read off the checkpoint's shapes (heads: hidden / 64, BERT's convention)."""
    vocab, hidden = state_dict["bert.embeddings.word_embeddings.weight"].shape
    layers = {int(m.group(1)) for key in state_dict if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", key))}
    return BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=max(layers) + 1,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=state_dict["bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state_dict["bert.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state_dict["bert.embeddings.token_type_embeddings.weight"].shape[0],
    )


def vision_backbone_from_weights(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The timm name of their torchvision ResNet, from its blocks per stage (torchvision's ImageNet weights)."""
    depths = tuple(
        len({m.group(1) for key in state_dict if (m := re.match(rf"resnet\.layer{stage}\.(\d+)\.", key))})
        for stage in range(1, 5)
    )
    if depths not in RESNET_DEPTHS:
        raise ValueError(f"unknown ResNet depth {depths} in the checkpoint; pass --vision_backbone")
    return RESNET_DEPTHS[depths]


def release_config(state_dict: Mapping[str, torch.Tensor], text_config: Any, **overrides: Any) -> UMGFConfig:
    """The "release" configuration whose shapes are the checkpoint's."""
    hidden, text_hidden = state_dict["trans_txt.weight"].shape
    fields: dict[str, Any] = {
        "text_config": text_config,
        "num_fusion_layers": num_fusion_layers(state_dict),
        "hidden_size": hidden,
        "intermediate_size": state_dict["ffn_x.0.w_1.weight"].shape[0],
        "num_attention_heads": NUM_HEADS,
        "vision_feature_dim": state_dict["resnet.fc.weight"].shape[0],
        **overrides,
    }
    if "vision_backbone" not in overrides:
        fields["vision_backbone"] = vision_backbone_from_weights(state_dict)
    config = UMGFConfig.from_preset("release", **fields)
    if config.text_encoder_config.hidden_size != text_hidden:
        raise ValueError(
            f"the text encoder has {config.text_encoder_config.hidden_size}-d outputs but the checkpoint's trans_txt "
            f"reads {text_hidden}-d ones"
        )
    return config


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """Their tensors under this model's names (see the module docstring); raises on a tensor it does not know."""
    d = state_dict["trans_txt.weight"].shape[0]
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in state_dict:
            raise ValueError(f"the checkpoint lacks {key!r}: not a state dict of the authors' MMNerModel")
        used.add(key)
        return state_dict[key]

    for key in state_dict:
        for prefix, target in (("bert.", "umgf.text_encoder."), ("resnet.", "umgf.vision_backbone.")):
            if key.startswith(prefix) and not IGNORED.match(key):
                out[target + key[len(prefix) :]] = take(key)
        if key.startswith("crf."):
            out[key] = take(key)
    for name in ("weight", "bias"):
        out[f"umgf.text_mlp.0.{name}"] = take(f"trans_txt.{name}")
        out[f"umgf.visual_mlp.0.{name}"] = take(f"trans_obj.0.{name}")
        out[f"umgf.visual_mlp.3.{name}"] = take(f"trans_obj.3.{name}")
        out[f"classifier.{name}"] = take(f"hidden2tag.{name}")
    for i in range(layers):
        ours = f"umgf.layers.{i}"
        for name in ("weight", "bias"):
            # text attention: q, k, v, output maps; object attention: q, k only (no value, no output map)
            text_qkv = [take(f"mhatt_x.{i}.linears.{j}.{name}") for j in range(3)]
            out[f"{ours}.text.attention.qkv.{name}"] = torch.cat(text_qkv)
            out[f"{ours}.text.attention.out.{name}"] = take(f"mhatt_x.{i}.linears.3.{name}")
            object_qk = [take(f"mhatt_o.{i}.linears.{j}.{name}") for j in range(2)]
            out[f"{ours}.visual.attention.qkv.{name}"] = torch.cat(object_qk)
            for theirs, target in LAYER_NORMS.items():
                out[f"{ours}.{target}.{name}"] = take(f"{theirs}.{i}.norm.{name}")
            for theirs, target in FEED_FORWARD.items():
                out[f"{ours}.{target}.fc1.{name}"] = take(f"{theirs}.{i}.w_1.{name}")
                out[f"{ours}.{target}.fc2.{name}"] = take(f"{theirs}.{i}.w_2.{name}")
        # gates (eq 4, 6): their Linear(2d, d) reads [words; objects] for the words' gate (mhatt_x2o) and
        # [words; objects] for the objects' gate too (mhatt_o2x), so the receiver is the first half for words
        # and the second half for objects.
        x2o, o2x = take(f"mhatt_x2o.{i}.weight"), take(f"mhatt_o2x.{i}.weight")
        out[f"{ours}.text.gate.w_self.weight"], out[f"{ours}.text.gate.w_other.weight"] = x2o[:, :d], x2o[:, d:]
        out[f"{ours}.visual.gate.w_self.weight"], out[f"{ours}.visual.gate.w_other.weight"] = o2x[:, d:], o2x[:, :d]
        out[f"{ours}.text.gate.w_self.bias"] = take(f"mhatt_x2o.{i}.bias")
        out[f"{ours}.visual.gate.w_self.bias"] = take(f"mhatt_o2x.{i}.bias")
    unknown = sorted(key for key in state_dict if key not in used and not IGNORED.match(key))
    if unknown:
        raise ValueError(f"the checkpoint has tensors the authors' MMNerModel does not: {unknown[:8]}")
    return {key: value.contiguous() for key, value in out.items()}


def load_converted(model: UMGFForTokenClassification, converted: Mapping[str, torch.Tensor]) -> None:
    """Load ``converted`` into ``model``, or raise naming the first missing / unexpected / misshapen tensors."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"the converted checkpoint does not fit the release network: missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    misshapen = [
        f"{key}: {tuple(converted[key].shape)} vs {tuple(expected[key].shape)}"
        for key in expected
        if converted[key].shape != expected[key].shape
    ]
    if misshapen:
        raise ValueError(f"the checkpoint's shapes do not fit the release network: {misshapen[:8]}")
    model.load_state_dict(converted, strict=True)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an authors' checkpoint (tensors only: ``weights_only=True``), without DDP prefixes."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, OSError, IndexError, KeyError) as error:
        # torch's own message advises weights_only=False, which would run the pickle's code: not relayed
        raise ValueError(
            f"{path} is not a checkpoint of tensors that can be read safely ({type(error).__name__}: a truncated "
            "or corrupt file, or a pickle holding more than tensors, which is never loaded)"
        ) from None
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{path} is not a state dict (a mapping of tensor names to tensors)")
    return {key.removeprefix("module."): value for key, value in loaded.items()}


def convert(
    checkpoint: str | Path,
    output_dir: str | Path,
    text_model_name_or_path: str = "bert-base-cased",
    vision_backbone: str | None = None,
    dataset: str | None = None,
) -> UMGFForTokenClassification:
    """Convert ``checkpoint`` into ``output_dir`` (model, and the processor when the tokenizer can be loaded);
    ``dataset`` (twitter2015 / twitter2017) is recorded in the config."""
    state_dict = read_checkpoint(checkpoint)
    try:
        text_config = AutoConfig.from_pretrained(text_model_name_or_path)
    except OSError as error:
        logger.warning(
            "cannot load %s (%s): reading the text encoder's shape off the checkpoint",
            text_model_name_or_path,
            str(error).splitlines()[0],
        )
        text_config = text_config_from_weights(state_dict)
        text_config._name_or_path = text_model_name_or_path
    overrides = {"vision_backbone": vision_backbone} if vision_backbone else {}
    config = release_config(state_dict, text_config, **overrides)
    if dataset:
        config.dataset = dataset
    model = UMGFForTokenClassification(config).eval()
    load_converted(model, convert_state_dict(state_dict, config.num_fusion_layers))
    model.save_pretrained(output_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(text_model_name_or_path, model_max_length=512)
    except OSError as error:
        logger.warning(
            "the model is converted into %s, but the processor is not: the tokenizer of %s cannot be loaded (%s). "
            "Rerun with --text_model_name_or_path set to a folder holding bert-base-cased's tokenizer to add it.",
            output_dir,
            text_model_name_or_path,
            str(error).splitlines()[0],
        )
        return model
    processor = UMGFProcessor(
        UMGFImageProcessor(config.vision_backbone), tokenizer, grounder=PRESET_GROUNDERS["release"], max_length=128
    )
    from ..pipeline_umgf import MultimodalNERPipeline

    MultimodalNERPipeline(model=model, processor=processor, device=-1).save_pretrained(output_dir)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="the authors' ddp_mner.pt (a pickled state dict, read with torch.load(weights_only=True))",
    )
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument(
        "--text_model_name_or_path",
        default="bert-base-cased",
        help="the text encoder their checkpoint was trained from, for its configuration and tokenizer",
    )
    parser.add_argument("--vision_backbone", help="timm name of their ResNet (default: read off the checkpoint)")
    parser.add_argument(
        "--dataset",
        choices=["twitter2015", "twitter2017"],
        help="what the checkpoint was trained on (recorded in the folder's config as `dataset`)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if not args.checkpoint.is_file():
        parser.error(f"no checkpoint file {args.checkpoint}")
    try:
        convert(args.checkpoint, args.output_dir, args.text_model_name_or_path, args.vision_backbone, args.dataset)
    except (ValueError, RuntimeError, OSError) as error:
        print(f"convert_original_checkpoint: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
