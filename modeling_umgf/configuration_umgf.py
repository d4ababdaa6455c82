"""UMGF configuration: the paper's defaults, the authors' released network, and the paper's baselines/ablations."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .schema import LABELS, RELEASE_TOKEN_LABELS, token_label_of

#: bert-base-cased, the paper's text encoder (its vocabulary is cased, 28,996 word pieces).
BERT_BASE_CASED: dict[str, Any] = {"vocab_size": 28996}

#: The processor's grounder of most presets: the paper's noun phrases and general words with a zero-shot detector.
DEFAULT_GROUNDER = "detector"


@dataclasses.dataclass(frozen=True)
class TrainingRecipe:
    """How train_umgf.py trains a preset: the defaults of its optimisation flags. The paper gives lr 1e-4 and batch
    16; the rest is this project's choice (the paper names neither optimizer nor schedule): AdamW, linear decay
    after a 10 % warmup, clipping at 1.0, 3 epochs, shuffled."""

    learning_rate: float = 1e-4
    num_train_epochs: int = 3
    per_device_train_batch_size: int = 16
    freeze_vision_backbone: bool = False
    optimizer: str = "adamw"
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    shuffle_train: bool = True


@dataclasses.dataclass(frozen=True)
class Preset:
    """One named setup: the `UMGFConfig` fields it sets over the defaults, the processor's grounder (the processor,
    not the model, owns the grounding) and its training recipe."""

    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    grounder: str = DEFAULT_GROUNDER
    training: TrainingRecipe = dataclasses.field(default_factory=TrainingRecipe)


#: The presets of `UMGFConfig.from_preset` and train_umgf.py's ``--preset``. "paper" is the default configuration.
PRESET_RECORDS: dict[str, Preset] = {
    # Zhang et al. (AAAI 2021), Implementation Details: L=2, d=512, 8 heads, dropout 0.5.
    "paper": Preset(),
    # The authors' released network (MMNerModel of ddp_mmner.py in github.com/TransformersWsz/UMGF), exactly, so
    # that their trained checkpoints load (modeling_umgf.tools.convert_original_checkpoint); their grounding (the
    # four general words' boxes linked to every sub-token) and their recipe (train() of ddp_mmner.py): Adam, lr 1e-4
    # for every parameter, StepLR (x0.8 every 2 epochs), 30 epochs, batch 16, no warmup, no clipping, and their data
    # order: no shuffling (the *_authors configs are in their file order).
    "release": Preset(
        config={
            "vision_backbone": "resnet152.tv_in1k",  # torchvision's ResNet-152, its weights and its crop transform
            "num_fusion_layers": 6,
            "intermediate_size": 256,
            "dropout": 0.4,
            "attention_dropout": 0.4,
            "activation_dropout": 0.0,
            "classifier_dropout": 0.0,
            "layer_norm_eps": 1e-5,
            "use_position_encoding": False,
            "text_node_projection": "linear",
            "visual_mlp_output_activation": True,
            "vision_projection": True,
            "visual_value_projection": False,
            "gate_layer_norm": True,
            "link_special_tokens": True,
            "classifier_input": "concat",
            "crf_level": "token",
            "token_labels": list(RELEASE_TOKEN_LABELS),
            "loss_reduction": "sum",
            "initializer": "xavier_uniform",
            "backbone_channels_last_in_training": False,
        },
        grounder="release",
        training=TrainingRecipe(
            num_train_epochs=30,
            optimizer="adam",
            lr_scheduler_type="step",
            warmup_ratio=0.0,
            max_grad_norm=0.0,
            shuffle_train=False,
        ),
    ),
    # Text-only baselines of the paper's Table 2.
    "bert": Preset(
        {"use_visual": False, "num_fusion_layers": 0, "classifier_input": "text", "decoder_type": "softmax"}
    ),
    "bert-crf": Preset(
        {"use_visual": False, "num_fusion_layers": 0, "classifier_input": "text", "decoder_type": "crf"}
    ),
    # UMGF without the image (every tweet has zero objects): the fusion layers become a Transformer encoder.
    "text-only": Preset({"use_visual": False}),
    # Ablations of the paper's Table 4.
    "wo-vcorr": Preset({"visual_self_attention": False}),
    "wo-ind": Preset({"share_modality_parameters": True}),
    "wo-tar": Preset(grounder="grid"),  # the same network as "paper", on grid regions instead of grounded objects
}

#: Each preset's `UMGFConfig` fields (a view of `PRESET_RECORDS`).
PRESETS: dict[str, dict[str, Any]] = {name: dict(record.config) for name, record in PRESET_RECORDS.items()}
#: Each preset's grounder (a view of `PRESET_RECORDS`).
PRESET_GROUNDERS: dict[str, str] = {name: record.grounder for name, record in PRESET_RECORDS.items()}


class UMGFConfig(PreTrainedConfig):
    r"""Configuration of a UMGF model (unified multi-modal graph fusion, Zhang et al., AAAI 2021).

    The defaults reproduce the paper's settings: a bert-base-cased text encoder, a ResNet-152 object
    encoder, d=512 node states, 8 attention heads, L=2 fusion layers, dropout 0.5 and a word-level CRF. The
    fields after ``text_packing`` are the switches between the paper and the authors' released network (the
    "release" preset sets them all).

    Args:
        text_config: configuration of any BERT-like encoder loadable with `AutoModel` (default:
            bert-base-cased shape).
        vision_backbone: timm model name of the object-crop encoder.
        vision_feature_dim: size of the object features the backbone outputs (2048 for ResNet-152).
        vision_backbone_kwargs: extra keyword arguments for `timm.create_model` (e.g. for tiny test models).
        hidden_size: d, the node state size after the text and visual MLPs.
        num_attention_heads: heads of the intra-modal self-attention (eq 1-2).
        num_fusion_layers: L, the number of graph-based multi-modal fusion layers.
        intermediate_size: inner size of the position-wise FFN (eq 7-8).
        dropout: dropout on MLPs, attention outputs, fusion messages, FFN outputs and (by default) the classifier.
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
        text_packing: encode the text padding-free: the real tokens of the batch are packed into a few rows whose
            sequences are kept apart by transformers' own packed-sequence masking where the installed version
            does it, by a block-diagonal attention mask elsewhere (same outputs, no BERT work on padding; see
            `text_packing.py`). Used only with a BERT text encoder on eager or SDPA attention and when it
            saves at least 20 % of the token slots; otherwise the padded batch is encoded as usual.
        activation_dropout: dropout inside the FFN, after its ReLU (None: ``dropout``; authors: 0).
        classifier_dropout: dropout on the decoder's input features (None: ``dropout``; authors: 0).
        text_node_projection: "mlp", the paper's text MLP (Linear-ReLU-Dropout-Linear), or "linear", the
            authors' single Linear from the BERT output to d.
        visual_mlp_output_activation: end the visual MLP with ReLU + dropout too (authors).
        vision_projection: the backbone's classifier is a trainable Linear(num_features, vision_feature_dim)
            (authors: ResNet-152's fc as a 2048 -> 2048 layer) instead of nothing (pooled features).
        visual_value_projection: False: the object self-attention has no value and no output projection
            (authors: the attention-weighted sum of the objects' own states).
        gate_layer_norm: LayerNorm after the gated sum: ``R = LN(C + dropout(message))`` (authors) instead of
            ``R = C + dropout(message)`` (eq 3, 5).
        link_special_tokens: link [CLS] and [SEP] to every object (authors).
        crf_level: "word": the CRF runs over words, read at their first sub-token (paper); "token": over every
            sub-token with ``token_labels``, continuation sub-tokens tagged X and the special tokens CLS/SEP
            (authors). The model's ``predictions`` are word-level either way.
        token_labels: the tag set of a token-level CRF; must hold X, CLS, SEP and every word label (or its
            alias, e.g. B-OTHER for B-MISC).
        loss_reduction: "mean" of the sentences' negative log-likelihoods or their "sum" (authors; pytorch-crf).
        initializer: "normal" (``initializer_range``) or "xavier_uniform" (authors: xavier for the fusion layers
            and the visual MLP, PyTorch's default for the text projection and the classifier).
        word_readout: how a word-level decoder reads a word from its sub-token nodes: at its "first" sub-token (the
            paper's and most BERT taggers' choice, good with a pretrained encoder, whose first sub-token already
            carries the word) or the "mean" over its sub-tokens (an encoder trained from scratch learns slowly to move
            what a later sub-token says onto the first; see BENCHMARKS.md, "Synthetic task").
        backbone_channels_last_in_training: feed the vision backbone channels-last crops in training too (faster
            convolutions; always in eval mode). False: NCHW crops in training, as the authors' code, so that a
            training step computes as theirs (a train-mode ResNet's gradient moves by percents with the rounding
            of the memory layout; BENCHMARKS.md).
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
    activation_dropout: float | None = None
    classifier_dropout: float | None = None
    text_node_projection: Literal["mlp", "linear"] = "mlp"
    visual_mlp_output_activation: bool = False
    vision_projection: bool = False
    visual_value_projection: bool = True
    gate_layer_norm: bool = False
    link_special_tokens: bool = False
    crf_level: Literal["word", "token"] = "word"
    token_labels: list[str] | None = None
    loss_reduction: Literal["mean", "sum"] = "mean"
    initializer: Literal["normal", "xavier_uniform"] = "normal"
    word_readout: Literal["first", "mean"] = "first"
    backbone_channels_last_in_training: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = dict(enumerate(LABELS))
            self.label2id = {label: i for i, label in enumerate(LABELS)}
        super().__post_init__(**kwargs)
        self._check()

    def _check(self) -> None:
        choices = {
            "classifier_input": ("fused", "concat", "text"),
            "decoder_type": ("crf", "softmax"),
            "text_node_projection": ("mlp", "linear"),
            "crf_level": ("word", "token"),
            "loss_reduction": ("mean", "sum"),
            "initializer": ("normal", "xavier_uniform"),
            "word_readout": ("first", "mean"),
        }
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field} must be one of {allowed}, got {getattr(self, field)!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.num_fusion_layers < 0:
            raise ValueError(f"num_fusion_layers must be >= 0, got {self.num_fusion_layers}")
        if self.use_visual and self.num_fusion_layers == 0:
            raise ValueError("use_visual=True needs at least one fusion layer: objects only reach words through them")
        if self.crf_level == "token":
            if self.decoder_type != "crf":
                raise ValueError("crf_level='token' needs decoder_type='crf'")
            if not self.token_labels:
                raise ValueError("crf_level='token' needs token_labels (e.g. schema.RELEASE_TOKEN_LABELS)")
            for label in self.label_names:
                token_label_of(label, self.token_labels)  # raises for a word label without a token tag

    @property
    def label_names(self) -> list[str]:
        """The word labels in id order."""
        id2label = {int(i): label for i, label in (self.id2label or {}).items()}
        return [id2label[i] for i in range(len(id2label))]

    @property
    def text_encoder_config(self) -> PreTrainedConfig:
        """``text_config`` as the configuration object it is once built."""
        assert isinstance(self.text_config, PreTrainedConfig), "text_config is not built"
        return self.text_config

    @property
    def num_decoder_tags(self) -> int:
        """Size of the decoder's tag set: the token labels of a token-level CRF, else the word labels."""
        return len(self.token_labels) if self.crf_level == "token" and self.token_labels else len(self.label_names)

    @classmethod
    def from_preset(cls, preset: str = "paper", **kwargs: Any) -> UMGFConfig:
        """Build the configuration of a named preset; keyword arguments override the preset's values.

        Presets: "paper" (default), "release" (the authors' released network), "bert", "bert-crf",
        "text-only", and the ablations "wo-vcorr", "wo-ind", "wo-tar".
        """
        if preset not in PRESETS:
            raise ValueError(f"unknown UMGF preset {preset!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[preset], **kwargs})


__all__ = [
    "DEFAULT_GROUNDER",
    "PRESETS",
    "PRESET_GROUNDERS",
    "PRESET_RECORDS",
    "Preset",
    "TrainingRecipe",
    "UMGFConfig",
]
