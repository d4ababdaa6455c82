"""UMGF configuration: the paper's defaults, the authors' release variant and the paper's baselines/ablations."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .schema_umgf import LABELS

#: bert-base-cased, the paper's text encoder (its vocabulary is cased, 28,996 word pieces).
BERT_BASE_CASED: dict[str, Any] = {"vocab_size": 28996}

#: Named presets for `UMGFConfig.from_preset`. "paper" is the default configuration itself.
PRESETS: dict[str, dict[str, Any]] = {
    # Zhang et al. (AAAI 2021), Implementation Details: L=2, d=512, 8 heads, dropout 0.5.
    "paper": {},
    # The authors' released code: 6 fusion layers, BERT output concatenated with the fused nodes before
    # the CRF (its grounding, the four type words linked to every sub-token, is the processor's: PRESET_GROUNDERS).
    "release": {"num_fusion_layers": 6, "classifier_input": "concat"},
    # Text-only baselines of the paper's Table 2.
    "bert": {"use_visual": False, "num_fusion_layers": 0, "classifier_input": "text", "decoder_type": "softmax"},
    "bert-crf": {"use_visual": False, "num_fusion_layers": 0, "classifier_input": "text", "decoder_type": "crf"},
    # UMGF without the image (every tweet has zero objects): the fusion layers become a Transformer encoder.
    "text-only": {"use_visual": False},
    # Ablations of the paper's Table 4.
    "wo-vcorr": {"visual_self_attention": False},
    "wo-ind": {"share_modality_parameters": True},
    "wo-tar": {},  # the same network as "paper", on grid regions instead of grounded objects: PRESET_GROUNDERS
}

#: The processor's grounder of each preset's graph (the processor, not the model, owns the grounding): the
#: "w/o Tar." ablation grounds grid cells, "release" the authors' four type-word boxes; every other preset the
#: paper's noun phrases and general words with a zero-shot detector.
PRESET_GROUNDERS: dict[str, str] = {"release": "release", "wo-tar": "grid"}
DEFAULT_GROUNDER = "detector"


class UMGFConfig(PreTrainedConfig):
    r"""Configuration of a UMGF model (unified multi-modal graph fusion, Zhang et al., AAAI 2021).

    The defaults reproduce the paper's settings: a bert-base-cased text encoder, a ResNet-152 object
    encoder, d=512 node states, 8 attention heads, L=2 fusion layers, dropout 0.5 and a word-level CRF.

    Args:
        text_config: configuration of any BERT-like encoder loadable with `AutoModel` (default:
            bert-base-cased shape).
        vision_backbone: timm model name of the object-crop encoder.
        vision_feature_dim: size of the backbone's pooled features (2048 for ResNet-152).
        vision_backbone_kwargs: extra keyword arguments for `timm.create_model` (e.g. for tiny test models).
        hidden_size: d, the node state size after the text and visual MLPs.
        num_attention_heads: heads of the intra-modal self-attention (eq 1-2).
        num_fusion_layers: L, the number of graph-based multi-modal fusion layers.
        intermediate_size: inner size of the position-wise FFN (eq 7-8).
        dropout: dropout on MLPs, attention outputs, fusion messages and FFNs.
        attention_dropout: dropout on attention probabilities.
        layer_norm_eps: LayerNorm epsilon.
        use_visual: build the visual branch (False: text-only model with no vision parameters).
        visual_self_attention: self-attention among objects (eq 2); False is the paper's "w/o VCorr" ablation.
        share_modality_parameters: one set of fusion parameters for both modalities ("w/o Ind" ablation).
        use_position_encoding: add sinusoidal position encodings to the BERT output before the text MLP.
        classifier_input: what feeds the decoder: "fused" text nodes (paper), "concat" BERT output and
            fused nodes (authors' release), or "text", the BERT output alone (BERT / BERT-CRF baselines).
        decoder_type: "crf" (eq 9-11) or "softmax".
        initializer_range: std of the normal initialisation of the fusion layers' linear maps.
        text_packing: encode the text padding-free: the real tokens of the batch are packed into a few rows
            with a block-diagonal attention mask (same outputs, no BERT work on padding; see
            `text_packing.py`). Used only with a BERT text encoder on eager or SDPA attention and when it
            saves at least 20 % of the token slots; otherwise the padded batch is encoded as usual.
    """

    model_type = "umgf"
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert", init_kwargs=BERT_BASE_CASED),
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_backbone: str = "resnet152"
    vision_feature_dim: int = 2048
    vision_backbone_kwargs: dict | None = None
    hidden_size: int = 512
    num_attention_heads: int = 8
    num_fusion_layers: int = 2
    intermediate_size: int = 2048
    dropout: float = 0.5
    attention_dropout: float = 0.0
    layer_norm_eps: float = 1e-6
    use_visual: bool = True
    visual_self_attention: bool = True
    share_modality_parameters: bool = False
    use_position_encoding: bool = True
    classifier_input: Literal["fused", "concat", "text"] = "fused"
    decoder_type: Literal["crf", "softmax"] = "crf"
    initializer_range: float = 0.02
    text_packing: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = dict(enumerate(LABELS))
            self.label2id = {label: i for i, label in enumerate(LABELS)}
        super().__post_init__(**kwargs)
        self._check()

    def _check(self) -> None:
        if self.classifier_input not in ("fused", "concat", "text"):
            raise ValueError(f"classifier_input must be 'fused', 'concat' or 'text', got {self.classifier_input!r}")
        if self.decoder_type not in ("crf", "softmax"):
            raise ValueError(f"decoder_type must be 'crf' or 'softmax', got {self.decoder_type!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.num_fusion_layers < 0:
            raise ValueError(f"num_fusion_layers must be >= 0, got {self.num_fusion_layers}")
        if self.use_visual and self.num_fusion_layers == 0:
            raise ValueError("use_visual=True needs at least one fusion layer: objects only reach words through them")

    @classmethod
    def from_preset(cls, preset: str = "paper", **kwargs: Any) -> UMGFConfig:
        """Build the configuration of a named preset; keyword arguments override the preset's values.

        Presets: "paper" (default), "release" (the authors' released code), "bert", "bert-crf",
        "text-only", and the ablations "wo-vcorr", "wo-ind", "wo-tar".
        """
        if preset not in PRESETS:
            raise ValueError(f"unknown UMGF preset {preset!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[preset], **kwargs})


__all__ = ["DEFAULT_GROUNDER", "PRESETS", "PRESET_GROUNDERS", "UMGFConfig"]
