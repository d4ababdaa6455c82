"""UMGF: unified multi-modal graph fusion for multimodal NER (Zhang et al., AAAI 2021).

Text nodes are the sub-tokens (BERT outputs), visual nodes the grounded objects; intra-modal fusion is
self-attention (eq 1-2), inter-modal fusion sums gated messages over the edges (eq 3-6, `multimodal_graph`). The
decoder reads each word at its first sub-token (word-level CRF, the paper) or tags every sub-token (the authors'
network). Without objects it is a Transformer encoder over BERT (paper, footnote 1). Inputs: CONTRACT.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_umgf import UMGFConfig
from .crf import CRF
from .input_checks import ModelInputs, check_inputs, check_label_maps, check_loaded_weights
from .multimodal_graph import batch_adjacency
from .precision import autocast, quantize_linear_int8, resolve_precision
from .schema import (
    CONTINUATION_TAG,
    FIRST_SPECIAL_TAG,
    LABEL_PAD_VALUE,
    LAST_SPECIAL_TAG,
    entity_tag_masks,
    token_label_of,
    word_label_of,
)
from .text_packing import can_pack, encode_packed


def sinusoidal_position_encoding(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The Transformer's sine/cosine position encoding (Vaswani et al. 2017): [length, dim].

    Computed on the fly (it is cheap) so the model holds no buffer that loading on the meta device could lose.
    """
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)[:, : dim // 2]
    return pe.to(dtype)


def _torch_default_init(linear: nn.Linear) -> nn.Linear:
    """Mark a linear map that keeps PyTorch's own initialisation under ``initializer="xavier_uniform"``."""
    linear._umgf_torch_default_init = True  # type: ignore[assignment,unused-ignore]
    return linear


def _xavier_fans(linear: nn.Linear, fan_in: int, fan_out: int) -> nn.Linear:
    """Mark a linear map that stacks (or is one half of) maps of fans ``fan_in`` -> ``fan_out``: under
    ``initializer="xavier_uniform"`` it gets the xavier bound sqrt(6 / (fan_in + fan_out)) of such a map, as the
    authors' separate maps do, not the bound of its own stacked shape."""
    linear._umgf_xavier_fans = (fan_in, fan_out)  # type: ignore[assignment,unused-ignore]
    return linear


def node_mlp(in_dim: int, config: UMGFConfig, output_activation: bool = False) -> nn.Sequential:
    """The text / visual MLP with ReLU that projects node features to d (paper, "Multi-modal Graph");
    ``output_activation`` ends it with ReLU + dropout too (the authors' visual MLP)."""
    layers: list[nn.Module] = [
        nn.Linear(in_dim, config.hidden_size),
        nn.ReLU(),
        nn.Dropout(config.dropout),
        nn.Linear(config.hidden_size, config.hidden_size),
    ]
    if output_activation:
        layers += [nn.ReLU(), nn.Dropout(config.dropout)]
    return nn.Sequential(*layers)


def text_node_projection(in_dim: int, config: UMGFConfig) -> nn.Sequential:
    """H_x^(0) from the BERT output: the paper's text MLP, or the authors' single linear map."""
    if config.text_node_projection == "linear":
        return nn.Sequential(_torch_default_init(nn.Linear(in_dim, config.hidden_size)))
    return node_mlp(in_dim, config)


class UMGFSelfAttention(nn.Module):
    """Multi-head self-attention within one modality (eq 1-2) with residual + LayerNorm, on SDPA.

    ``value_projection=False`` (the authors' object attention) attends with query and key projections only:
    the values are the nodes' own states and there is no output projection.
    """

    def __init__(self, config: UMGFConfig, value_projection: bool = True) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        size = config.hidden_size
        # q, k (and v) stacked: each is its own d -> d map for the initialisation (the authors' separate maps)
        self.qkv = _xavier_fans(nn.Linear(size, (3 if value_projection else 2) * size), size, size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size) if value_projection else None
        self.dropout = nn.Dropout(config.dropout)
        self.attention_dropout = config.attention_dropout
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """hidden [B, N, d], key_mask [B, N] bool (True = real node). Returns C = LN(H + MHA(H, H, H))."""
        batch, length, dim = hidden.shape
        heads = self.num_heads
        projected = self.qkv(hidden).view(batch, length, -1, heads, dim // heads).permute(2, 0, 3, 1, 4)
        q, k = projected[0], projected[1]
        v = projected[2] if self.out is not None else hidden.view(batch, length, heads, dim // heads).transpose(1, 2)
        # A sequence with no real node (a tweet without objects) attends everywhere: its output is finite and
        # never used, since padded nodes have no inter-modal edges and are zeroed after each layer.
        key_mask = key_mask | ~key_mask.any(dim=1, keepdim=True)
        context = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=key_mask[:, None, None, :],
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        context = context.transpose(1, 2).reshape(batch, length, dim)
        if self.out is not None:
            context = self.out(context)
        return self.norm(hidden + self.dropout(context))


class UMGFFeedForward(nn.Module):
    """Position-wise FFN (eq 7-8) with residual + LayerNorm."""

    def __init__(self, config: UMGFConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        inner = config.dropout if config.activation_dropout is None else config.activation_dropout
        self.activation_dropout = nn.Dropout(inner)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden + self.dropout(self.fc2(self.activation_dropout(F.relu(self.fc1(hidden))))))


class UMGFCrossModalGate(nn.Module):
    """Gated inter-modal fusion for one receiving modality (eq 3-4 for words, eq 5-6 for objects).

    ``R_i = C_i + sum_j A_ij * alpha_ij ⊙ C'_j`` with ``alpha_ij = sigmoid(W_self C_i + W_other C'_j)``.
    ``W [C_i; C'_j]`` equals ``W_self C_i + W_other C'_j``, so each side is projected once and the gate
    is formed by broadcasting over the (i, j) pairs. With ``config.gate_layer_norm`` (the authors' network),
    ``R_i`` of a node with an edge is layer-normalised; a node without edges receives nothing and keeps ``C_i``, as
    in a batch without objects (in the authors' graphs every token has edges).
    """

    def __init__(self, config: UMGFConfig) -> None:
        super().__init__()
        size = config.hidden_size
        # the two halves of one W [C_i; C'_j] (2d -> d) for the initialisation, as the authors' single map
        self.w_self = _xavier_fans(nn.Linear(size, size), 2 * size, size)  # W1 (eq 4) / W3 (eq 6)
        self.w_other = _xavier_fans(nn.Linear(size, size, bias=False), 2 * size, size)  # W2 (eq 4) / W4 (eq 6)
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.gate_layer_norm else None

    def forward(
        self, c_self: torch.Tensor, c_other: torch.Tensor, adjacency: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """c_self [B, N, d], c_other [B, M, d], adjacency [B, N, M] float.

        Returns R [B, N, d] and the edge-masked mean gate over d, [B, N, M] (for explanations).
        """
        gate = torch.sigmoid(self.w_self(c_self).unsqueeze(2) + self.w_other(c_other).unsqueeze(1))  # [B, N, M, d]
        gate = gate * adjacency.unsqueeze(-1)
        message = torch.einsum("bnmd,bmd->bnd", gate, c_other)  # sum over neighbours (eq 3 / eq 5)
        fused = c_self + self.dropout(message)
        if self.norm is not None:
            fused = torch.where(adjacency.ne(0).any(-1, keepdim=True), self.norm(fused), fused)
        return fused, gate.mean(-1)


class UMGFModalityBlock(nn.Module):
    """The per-modality parameters of one fusion layer: self-attention, cross-modal gate, FFN."""

    def __init__(self, config: UMGFConfig, self_attention: bool = True, value_projection: bool = True) -> None:
        super().__init__()
        self.attention = UMGFSelfAttention(config, value_projection) if self_attention else None
        self.gate = UMGFCrossModalGate(config) if config.use_visual else None
        self.ffn = UMGFFeedForward(config)


class UMGFFusionLayer(GradientCheckpointingLayer):
    """One graph-based multi-modal fusion layer (eq 1-8): intra-modal, then inter-modal fusion, then FFN."""

    def __init__(self, config: UMGFConfig) -> None:
        super().__init__()
        self.text = UMGFModalityBlock(config)
        # "w/o Ind" shares one set of parameters between the modalities; "w/o VCorr" drops eq 2.
        self.visual = (
            UMGFModalityBlock(
                config,
                self_attention=config.visual_self_attention,
                value_projection=config.visual_value_projection,
            )
            if config.use_visual and not config.share_modality_parameters
            else None
        )
        self.visual_self_attention = config.visual_self_attention

    def forward(
        self,
        h_x: torch.Tensor,
        text_mask: torch.Tensor,
        h_o: torch.Tensor | None = None,
        object_mask: torch.Tensor | None = None,
        adjacency: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns the new H_x [B, T, d], H_o [B, O, d] (or None) and the mean alpha gates [B, T, O]."""
        text, visual = self.text, self.visual or self.text
        assert text.attention is not None
        c_x = text.attention(h_x, text_mask)  # eq 1
        if h_o is None or object_mask is None or adjacency is None:
            return text.ffn(c_x), None, None  # no objects: a Transformer layer
        assert text.gate is not None and visual.gate is not None
        c_o = visual.attention(h_o, object_mask) if self.visual_self_attention and visual.attention else h_o  # eq 2
        r_x, alpha = text.gate(c_x, c_o, adjacency)  # eq 3-4
        r_o, _ = visual.gate(c_o, c_x, adjacency.transpose(1, 2))  # eq 5-6
        h_o = torch.where(object_mask.unsqueeze(-1), visual.ffn(r_o), 0.0)  # eq 8; padded objects stay zero
        return text.ffn(r_x), h_o, alpha  # eq 7


@dataclass
class UMGFModelOutput(ModelOutput):
    """Output of `UMGFModel`.

    Args:
        last_hidden_state: final text node states H_x^(L), [B, T, d].
        visual_hidden_state: final object node states H_o^(L), [B, O, d] (None without objects).
        text_encoder_hidden_state: the text encoder's (BERT's) last hidden state, [B, T, hidden] (zeros at
            padding when the batch was encoded packed, `config.text_packing`).
        gates: per fusion layer, the mean over d of the alpha gates (eq 4) on inter-modal edges, [B, T, O].
    """

    last_hidden_state: torch.Tensor | None = None
    visual_hidden_state: torch.Tensor | None = None
    text_encoder_hidden_state: torch.Tensor | None = None
    gates: tuple[torch.Tensor, ...] | None = None


@dataclass
class UMGFTokenClassifierOutput(ModelOutput):
    """Output of `UMGFForTokenClassification`.

    Args:
        loss: negative log-likelihood of the gold tags (eq 10) averaged over (``loss_reduction="mean"``) or
            summed over the sentences (CRF), or the mean token cross-entropy (softmax decoder).
        logits: the decoder's emission scores: word-level [B, W, num_labels], or for a token-level CRF
            (``crf_level="token"``, the authors' network) sub-token-level [B, T, len(token_labels)].
        predictions: best tag per word (Viterbi, eq 11, or argmax) as word label ids, [B, W], -100 at padded word
            slots. Filled in eval mode or when no labels are given.
        word_mask: [B, W] bool, True at real words.
        word_positions: [B, W] long, the position of each word's first sub-token (0 at padded slots).
        token_mask: [B, T] bool, True at real sub-tokens.
        gates: see `UMGFModelOutput.gates`.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    predictions: torch.Tensor | None = None
    word_mask: torch.Tensor | None = None
    word_positions: torch.Tensor | None = None
    token_mask: torch.Tensor | None = None
    gates: tuple[torch.Tensor, ...] | None = None


class UMGFPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading for UMGF models.

    The text encoder is a `PreTrainedModel` and initialises itself; the timm vision backbone is initialised
    by timm when built, so `_init_weights` leaves both alone (a loaded pretrained backbone is never wiped).
    The attention implementation (``attn_implementation="sdpa" | "eager" | "flash_attention_2"``) applies to the
    text encoder; the fusion layers always use `torch.nn.functional.scaled_dot_product_attention`. The CRF is
    kept in float32 when the model is loaded in half precision.
    """

    config_class = UMGFConfig
    config: UMGFConfig
    base_model_prefix = "umgf"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _keep_in_fp32_modules_strict = ["crf"]
    _no_split_modules = ["UMGFFusionLayer"]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`, strict about what it loads: tensors of another size than the config
        gives, and for a folder saved by this class tensors missing from the weights or left over, are a
        `WeightsMismatchError` naming them (transformers would only log them and leave random or dropped weights);
        ``id2label`` / ``label2id`` must agree. ``ignore_mismatched_sizes=True`` keeps transformers' behaviour."""
        if kwargs.get("ignore_mismatched_sizes") or kwargs.get("state_dict") is not None:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        wants_info = kwargs.pop("output_loading_info", False)
        loaded: Any = super().from_pretrained(
            pretrained_model_name_or_path, *args, ignore_mismatched_sizes=True, output_loading_info=True, **kwargs
        )
        model, info = loaded
        source = os.fspath(pretrained_model_name_or_path)
        check_loaded_weights(info, source, cls.__name__ in (model.config.architectures or []))
        check_label_maps(model.config, source)
        return (model, info) if wants_info else model

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """`PreTrainedModel.save_pretrained`, with an `auto_map` naming every UMGF auto class, so that
        `AutoConfig`, `AutoModel` and `AutoModelForTokenClassification` all load the folder as remote code."""
        module = UMGFModel.__module__.rsplit(".", 1)[-1]
        self.config.auto_map = {
            **(getattr(self.config, "auto_map", None) or {}),
            "AutoConfig": f"{UMGFConfig.__module__.rsplit('.', 1)[-1]}.UMGFConfig",
            "AutoModel": f"{module}.UMGFModel",
            "AutoModelForTokenClassification": f"{module}.UMGFForTokenClassification",
        }
        super().save_pretrained(save_directory, *args, **kwargs)

    def optimize_for_inference(self, compile_backbone: bool = True) -> UMGFPreTrainedModel:
        """Prepare the model for fast inference and return it: eval mode, the backbone's weights channels-last
        (NHWC convolutions) and, with ``compile_backbone``, its forward compiled by TorchInductor with frozen weights
        (BatchNorm folded). Outputs equal the eager model's up to float rounding. Call it once the weights are
        loaded (they are baked into the compiled code); compiling needs a C++ compiler on CPU and is paid on the
        first batch and once more when the number of crops first changes."""
        self.eval()
        base = getattr(self, self.base_model_prefix, self)
        backbone = getattr(base, "vision_backbone", None)
        if backbone is not None:
            backbone.to(memory_format=torch.channels_last)
            if compile_backbone:
                backbone.compile(options={"freezing": True})
        return self

    def set_inference_precision(self, precision: str = "auto") -> UMGFPreTrainedModel:
        """Set the precision of inference (eval mode; training always computes as the weights are) and return the
        model: ``"fp32"``, ``"bf16"`` (bfloat16 autocast over the encoder: backbone, text encoder, fusion layers;
        the emission scores and the CRF in float32), ``"int8"`` (the encoder's linear layers quantised to int8,
        in place and for good; CPU only) or ``"auto"`` (bf16 where the model's device has native bfloat16
        arithmetic, fp32 elsewhere). See `precision` for what each costs and keeps; BENCHMARKS.md measures how
        often each predicts the same tags as fp32. Returns the resolved precision in ``inference_precision``.
        """
        resolved = resolve_precision(precision, self.device)
        current = self.inference_precision
        if current == "int8" and resolved != "int8":
            raise ValueError(f"this model's linear layers are quantised to int8: load it anew for {resolved!r}")
        base = getattr(self, self.base_model_prefix, self)
        if resolved == "int8" and current != "int8":
            quantize_linear_int8(base)
        for module in {self, base}:
            module._inference_precision = resolved  # type: ignore[assignment,unused-ignore]
        return self

    @property
    def inference_precision(self) -> str:
        """The precision of inference set by `set_inference_precision` ("fp32" unless set)."""
        return getattr(self, "_inference_precision", "fp32")

    def _set_gradient_checkpointing(self, enable: bool = True, *args: Any, **kwargs: Any) -> None:
        """transformers' switch (the BERT layers and the fusion layers), plus timm's own switch for the vision
        backbone, which transformers does not reach. timm checkpoints the backbone block by block.

        With the backbone checkpointed, its BatchNorm layers run twice in training and so update their
        running statistics twice per step; outputs and gradients of the step are unchanged.
        """
        super()._set_gradient_checkpointing(enable, *args, **kwargs)
        for module in self.modules():
            backbone = getattr(module, "vision_backbone", None) if isinstance(module, UMGFModel) else None
            if backbone is not None and hasattr(backbone, "set_grad_checkpointing"):
                backbone.set_grad_checkpointing(enable)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            if self.config.initializer == "normal":
                init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
                bias = 0.0
            elif getattr(module, "_umgf_torch_default_init", False):  # nn.Linear's own reset_parameters
                init.kaiming_uniform_(module.weight, a=math.sqrt(5))
                bias = 1 / math.sqrt(module.in_features)
            else:
                fans = getattr(module, "_umgf_xavier_fans", None)
                if fans is None:
                    init.xavier_uniform_(module.weight)
                else:  # a stacked map or half a map: the bound of the map it stands for
                    bound = math.sqrt(6.0 / sum(fans))
                    init.uniform_(module.weight, -bound, bound)
                bias = 0.0
            if module.bias is not None:
                if bias:
                    init.uniform_(module.bias, -bias, bias)
                else:
                    init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, CRF):
            for param in (module.start_transitions, module.end_transitions, module.transitions):
                init.uniform_(param, -0.1, 0.1)


def _mark_initialized(module: nn.Module) -> None:
    """Tell transformers' initialisation to leave a module that built (or loaded) its own weights alone."""
    for sub in module.modules():
        sub._is_hf_initialized = True  # type: ignore[assignment,unused-ignore]


def _text_encoder(factory: Callable[..., nn.Module], source: PreTrainedConfig | str) -> nn.Module:
    """``AutoModel.from_config`` / ``from_pretrained`` without the pooler where the architecture allows it."""
    try:
        return factory(source, add_pooling_layer=False)
    except TypeError:  # encoders that have no pooler take no such argument
        return factory(source)


def build_vision_backbone(config: UMGFConfig, backbone: nn.Module | None = None) -> nn.Module:
    """The timm object encoder of ``config`` (``backbone``: one already built with ``num_classes=0``, e.g.
    pretrained): pooled features, or (``vision_projection``) features through a trainable
    Linear(num_features, vision_feature_dim) in place of the classifier (timm's ``reset_classifier``)."""
    if backbone is None:
        kwargs = config.vision_backbone_kwargs or {}
        backbone = timm.create_model(config.vision_backbone, pretrained=False, num_classes=0, **kwargs)
    if config.vision_projection:
        backbone.reset_classifier(config.vision_feature_dim)  # type: ignore[operator]
    size = backbone.num_classes if config.vision_projection else backbone.num_features
    if size != config.vision_feature_dim:
        raise ValueError(
            f"vision backbone {config.vision_backbone!r} gives {size}-d features, "
            f"but config.vision_feature_dim is {config.vision_feature_dim}"
        )
    return backbone


class UMGFModel(UMGFPreTrainedModel):
    """The UMGF encoder: text encoder + object encoder + L graph-based multi-modal fusion layers.

    See CONTRACT.md for the inputs. Pass ``text_encoder`` / ``vision_backbone`` to use modules that are already
    built (pretrained); `UMGFForTokenClassification.from_text_vision_pretrained` does that for you.
    """

    def __init__(
        self,
        config: UMGFConfig,
        text_encoder: nn.Module | None = None,
        vision_backbone: nn.Module | None = None,
    ) -> None:
        super().__init__(config)
        if text_encoder is None:
            text_encoder = _text_encoder(AutoModel.from_config, config.text_encoder_config)
        else:
            _mark_initialized(text_encoder)
        self.text_encoder = text_encoder
        self.text_mlp = text_node_projection(config.text_encoder_config.hidden_size, config)
        self.vision_backbone: nn.Module | None = None
        if config.use_visual:
            backbone = vision_backbone if vision_backbone is not None else build_vision_backbone(config)
            _mark_initialized(backbone)
            self.vision_backbone = backbone
            self.visual_mlp = node_mlp(config.vision_feature_dim, config, config.visual_mlp_output_activation)
        self.layers = nn.ModuleList([UMGFFusionLayer(config) for _ in range(config.num_fusion_layers)])
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_encoder.get_input_embeddings()  # type: ignore[operator]

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_encoder.set_input_embeddings(value)  # type: ignore[operator]

    def encode_objects(self, pixel_values: torch.Tensor, object_mask: torch.Tensor) -> torch.Tensor:
        """Backbone features of the real object crops: [B, O, 3, H, W] -> [B, O, F] (zeros at padding).

        With the backbone in eval mode, identical crops are encoded once (exact: the same features).
        """
        if not self.config.use_visual:
            raise ValueError("this UMGF model has no visual branch (config.use_visual=False)")
        if self.vision_backbone is None:
            raise ValueError(
                "this model's vision backbone was released (vision_backbone=None, e.g. to save memory "
                "when training from cached features): give object_features instead of pixel_values"
            )
        if pixel_values.dim() != 5:
            raise ValueError(f"pixel_values must be [batch, objects, 3, H, W], got shape {tuple(pixel_values.shape)}")
        dtype = next(self.vision_backbone.parameters()).dtype
        features = pixel_values.new_zeros(*pixel_values.shape[:2], self.config.vision_feature_dim, dtype=dtype)
        real = object_mask.bool().nonzero(as_tuple=True)  # the one device sync of the visual branch: which are real
        crops = pixel_values[real].to(dtype)
        if len(crops) == 0:
            return features
        inverse = None
        if not self.vision_backbone.training:
            # Identical crops (one box grounded from several phrases) go through the backbone once. Only in
            # eval mode: in training, BatchNorm's batch statistics depend on every crop of the batch.
            unique, inverse = torch.unique(crops.flatten(1), dim=0, return_inverse=True)
            if len(unique) < len(crops):
                first = torch.full((len(unique),), len(crops), device=crops.device)
                first = first.scatter_reduce(0, inverse, torch.arange(len(crops), device=crops.device), "amin")
                crops = crops[first]
            else:
                inverse = None
        # NHWC crops let oneDNN / cuDNN pick their channels-last convolutions (BENCHMARKS.md); in training, the
        # "release" preset keeps the authors' NCHW crops (config.backbone_channels_last_in_training)
        nhwc = self.config.backbone_channels_last_in_training or not self.vision_backbone.training
        layout = torch.channels_last if nhwc else torch.contiguous_format
        encoded = self.vision_backbone(crops.contiguous(memory_format=layout))
        features[real] = (encoded if inverse is None else encoded[inverse]).to(features.dtype)
        return features

    def _visual_inputs(
        self, x: ModelInputs, text_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Initial object states H_o^(0) [B, O, d], the object mask and the adjacency; None without objects."""
        given = x.pixel_values if x.pixel_values is not None else x.object_features
        if given is None or given.shape[1] == 0 or not self.config.use_visual:
            return None
        batch, num_objects = given.shape[:2]
        object_mask = (
            x.object_mask.bool()
            if x.object_mask is not None
            else torch.ones(batch, num_objects, dtype=torch.bool, device=given.device)
        )
        if x.pixel_values is not None:
            features = self.encode_objects(x.pixel_values, object_mask)
        else:
            assert x.object_features is not None
            # the MLP's float dtype (an int8-quantised MLP has no float parameters: the encoder's input dtype)
            dtypes = [p.dtype for p in self.visual_mlp.parameters()] or [next(self.text_encoder.parameters()).dtype]
            features = x.object_features.to(dtypes[0])
        # Padded object slots may hold anything (even NaN): they are replaced, never multiplied by 0.
        present = object_mask.unsqueeze(-1)
        h_o = torch.where(present, self.visual_mlp(torch.where(present, features, 0.0)), 0.0)
        adjacency = batch_adjacency(
            text_mask, object_mask, x.inter_modal_adjacency, x.word_ids, self.config.link_special_tokens
        )
        return h_o, object_mask, adjacency.to(h_o.dtype)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        output_gates: bool = False,
        **inputs: Any,
    ) -> UMGFModelOutput:
        """Encode a batch of (sentence, objects) graphs.

        ``inputs``: the other model inputs of CONTRACT.md ("Model inputs"), by name (the fields of
        `input_checks.ModelInputs`). Other keywords (``return_dict``, ...) are not inputs and are ignored.
        """
        x = ModelInputs.from_keywords({**inputs, "input_ids": input_ids, "attention_mask": attention_mask})
        check_inputs(self.config, x)
        return self.encode(x, output_gates)

    def encode(self, x: ModelInputs, output_gates: bool = False) -> UMGFModelOutput:
        """The forward pass on inputs already checked by `input_checks.check_inputs`, in the inference precision
        (`set_inference_precision`) in eval mode."""
        reference = x.input_ids if x.input_ids is not None else x.inputs_embeds
        assert reference is not None
        if self.inference_precision == "int8" and self.training:
            raise ValueError("a model quantised to int8 (set_inference_precision('int8')) cannot be trained")
        with autocast("fp32" if self.training else self.inference_precision, reference.device.type):
            return self._encode(x, reference, output_gates)

    def _encode(self, x: ModelInputs, reference: torch.Tensor, output_gates: bool) -> UMGFModelOutput:
        attention_mask = (
            x.attention_mask
            if x.attention_mask is not None
            else torch.ones(reference.shape[:2], dtype=torch.long, device=reference.device)
        )
        text_states = None
        if self.config.text_packing and can_pack(self.text_encoder):
            text_states = encode_packed(
                self.text_encoder, attention_mask, x.input_ids, x.inputs_embeds, x.token_type_ids
            )
        if text_states is None:  # not packable, or packing would not save enough (see text_packing.py)
            encoder_kwargs = {"token_type_ids": x.token_type_ids} if x.token_type_ids is not None else {}
            text_states = self.text_encoder(
                input_ids=x.input_ids, attention_mask=attention_mask, inputs_embeds=x.inputs_embeds, **encoder_kwargs
            ).last_hidden_state
        h_x = text_states
        if self.config.use_position_encoding:
            h_x = h_x + sinusoidal_position_encoding(h_x.shape[1], h_x.shape[2], h_x.device, h_x.dtype)
        h_x = self.text_mlp(h_x)  # H_x^(0)

        text_mask = attention_mask.bool()
        visual = self._visual_inputs(x, text_mask)
        h_o, object_mask, adjacency = visual if visual is not None else (None, None, None)
        gates = []
        for layer in self.layers:
            h_x, h_o, alpha = layer(h_x, text_mask, h_o, object_mask, adjacency)
            if alpha is not None:
                gates.append(alpha)
        return UMGFModelOutput(
            last_hidden_state=h_x,
            visual_hidden_state=h_o,
            text_encoder_hidden_state=text_states,
            gates=tuple(gates) if output_gates and gates else None,
        )


def first_subtoken_index(word_ids: torch.Tensor, num_words: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Position of each word's first sub-token and the word mask: ([B, W] long, [B, W] bool), for ``word_ids``
    already checked (`input_checks.check_inputs`, which also gives ``num_words``)."""
    batch, length = word_ids.shape
    previous = torch.cat([word_ids.new_full((batch, 1), -1), word_ids[:, :-1]], dim=1)
    is_first = (word_ids >= 0) & (word_ids != previous)
    slot = torch.where(is_first, word_ids, torch.full_like(word_ids, num_words))  # num_words = discard slot
    positions = torch.arange(length, device=word_ids.device).expand(batch, -1)
    first = word_ids.new_zeros(batch, num_words + 1).scatter_(1, slot, positions)[:, :num_words]
    word_mask = torch.arange(num_words, device=word_ids.device) < (word_ids.max(1).values + 1).unsqueeze(1)
    return first, word_mask


class WordLayout(NamedTuple):
    """Where a batch's words sit among its sub-tokens: what the decoders read, score and decode by."""

    word_ids: torch.Tensor  # [B, T] the word of each sub-token, -1 at special tokens and padding
    first: torch.Tensor  # [B, W] the position of each word's first sub-token (0 at padded word slots)
    word_mask: torch.Tensor  # [B, W] bool, True at real words
    token_mask: torch.Tensor  # [B, T] bool, True at real sub-tokens

    @property
    def num_words(self) -> int:
        return self.first.shape[1]


def word_layout(word_ids: torch.Tensor, attention_mask: torch.Tensor, num_words: int) -> WordLayout:
    """The `WordLayout` of checked ``word_ids`` with ``num_words`` words (`input_checks.check_inputs`)."""
    first, word_mask = first_subtoken_index(word_ids, num_words)
    return WordLayout(word_ids, first, word_mask, attention_mask.bool())


def _with_first_position(mask: torch.Tensor) -> torch.Tensor:
    """A CRF mask whose rows all start with a real position: empty rows get a dummy first position (their
    results are discarded), so no row has to be selected out with a device sync."""
    return torch.cat([torch.ones_like(mask[:, :1]), mask[:, 1:]], dim=1) if mask.shape[1] else mask


class UMGFForTokenClassification(UMGFPreTrainedModel):
    """UMGF with a decoder: a linear-chain CRF (eq 9-11, default) or a softmax, over words; or a CRF over every
    sub-token (``crf_level="token"``, the authors' released network) whose tags are read at each word's first
    sub-token, X / CLS / SEP as O and OTHER as MISC, exactly as their scoring reads them."""

    def __init__(self, config: UMGFConfig, **modules: nn.Module | None) -> None:
        """``modules``: ``text_encoder`` / ``vision_backbone`` already built, for `UMGFModel`."""
        super().__init__(config)
        self.num_labels: int = len(config.label_names)
        self.umgf = UMGFModel(config, **modules)
        text_size = config.text_encoder_config.hidden_size
        in_dim = {
            "fused": config.hidden_size,
            "concat": text_size + config.hidden_size,
            "text": text_size,
        }[config.classifier_input]
        dropout = config.dropout if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = nn.Dropout(dropout)
        classifier = nn.Linear(in_dim, config.num_decoder_tags)
        self.classifier = _torch_default_init(classifier) if config.crf_level == "token" else classifier
        self.crf = CRF(config.num_decoder_tags) if config.decoder_type == "crf" else None
        self.post_init()

    @classmethod
    def from_text_vision_pretrained(
        cls,
        text_model_name_or_path: str,
        vision_backbone: str | None = "resnet152",
        vision_weights: str | os.PathLike | bool = True,
        **config_kwargs: Any,
    ) -> UMGFForTokenClassification:
        """Compose a new UMGF model from pretrained parts, the way `VisionTextDualEncoderModel` does.

        Args:
            text_model_name_or_path: Hub id or local folder of a BERT-like encoder (`AutoModel.from_pretrained`).
            vision_backbone: timm model name of the object encoder, or None for a text-only model.
            vision_weights: True for timm's pretrained weights (downloaded by timm), a path to a local
                weights file (.safetensors / .pth, e.g. saved from `timm.create_model(...).state_dict()`),
                or False for random weights.
            config_kwargs: any `UMGFConfig` field, e.g. ``num_fusion_layers`` or ``id2label``.

        The fusion layers and the decoder are freshly initialised; the parts keep their pretrained weights.
        """
        text_config = AutoConfig.from_pretrained(text_model_name_or_path)
        text_encoder = _text_encoder(AutoModel.from_pretrained, text_model_name_or_path)
        backbone = None
        if vision_backbone is not None and config_kwargs.get("use_visual", True):
            overlay = None if isinstance(vision_weights, bool) else {"file": os.fspath(vision_weights)}
            pooled = timm.create_model(
                vision_backbone,
                pretrained=bool(vision_weights),
                pretrained_cfg_overlay=overlay,
                num_classes=0,
                **(config_kwargs.get("vision_backbone_kwargs") or {}),
            )
            config_kwargs = {
                "vision_feature_dim": pooled.num_features,
                **config_kwargs,
                "vision_backbone": vision_backbone,
            }
            config = UMGFConfig(text_config=text_config, **config_kwargs)
            backbone = build_vision_backbone(config, pooled)
        else:
            config = UMGFConfig(text_config=text_config, **{**config_kwargs, "use_visual": False})
        return cls(config, text_encoder=text_encoder, vision_backbone=backbone)

    def word_features(self, outputs: UMGFModelOutput) -> torch.Tensor:
        """The per-sub-token features the decoder reads, by ``config.classifier_input``: [B, T, *]."""
        fused, text = outputs.last_hidden_state, outputs.text_encoder_hidden_state
        assert fused is not None and text is not None
        if self.config.classifier_input == "fused":
            return fused
        if self.config.classifier_input == "text":
            return text
        return torch.cat([text, fused], dim=-1)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        word_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        object_features: torch.Tensor | None = None,
        object_mask: torch.Tensor | None = None,
        inter_modal_adjacency: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_gates: bool = False,
        **kwargs: Any,
    ) -> UMGFTokenClassifierOutput:
        """Tag every word; with ``labels``, also return the loss. The inputs are CONTRACT.md's ("Model inputs"),
        spelled out (the fields of `input_checks.ModelInputs`) because the Trainer keeps a dataset's columns by
        the names in this signature."""
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference is not None and attention_mask is None:
            attention_mask = torch.ones(reference.shape[:2], dtype=torch.long, device=reference.device)
        if reference is not None and word_ids is None and attention_mask is not None:
            word_ids = torch.where(attention_mask.bool(), attention_mask.long().cumsum(1) - 1, -1)  # token = word
        x = ModelInputs.from_keywords(locals())  # the parameters above, by name (defaults filled in)
        num_words = check_inputs(self.config, x, labels_for_every_word=self.crf is not None)
        assert word_ids is not None and attention_mask is not None and num_words is not None
        outputs = self.umgf.encode(x, output_gates)
        features = self.word_features(outputs).to(self.classifier.weight.dtype)  # float32 after bf16 autocast
        words = word_layout(word_ids, attention_mask, num_words)
        if self.config.crf_level == "token":
            logits = self.classifier(self.dropout(features))  # sub-token emission scores [B, T, K]
        else:
            logits = self.classifier(self.dropout(self.read_words(features, words)))  # [B, W, C]

        loss = None
        if labels is not None:
            labels = labels[:, :num_words].to(words.word_mask.device)
            loss = self._loss(logits, labels, words)
        predictions = None
        if labels is None or not self.training:
            predictions = self._decode(logits, words)
        return UMGFTokenClassifierOutput(
            loss=loss,
            logits=logits,
            predictions=predictions,
            word_mask=words.word_mask,
            word_positions=words.first,
            token_mask=words.token_mask,
            gates=outputs.gates,
        )

    def read_words(self, features: torch.Tensor, words: WordLayout) -> torch.Tensor:
        """Each word's state [B, W, *] from its sub-tokens' [B, T, *]: at its first sub-token
        (``word_readout="first"``) or the mean over its sub-tokens ("mean")."""
        num_words = words.num_words
        if self.config.word_readout == "first":
            return features.gather(1, words.first.unsqueeze(-1).expand(-1, -1, features.shape[-1]))
        # special tokens go to a discarded slot
        slots = torch.where(words.word_ids >= 0, words.word_ids, num_words).unsqueeze(-1)
        sums = features.new_zeros(features.shape[0], num_words + 1, features.shape[-1])
        sums = sums.scatter_add(1, slots.expand(-1, -1, features.shape[-1]), features)
        counts = features.new_zeros(features.shape[0], num_words + 1, 1).scatter_add(
            1, slots, torch.ones_like(slots, dtype=features.dtype)
        )
        return (sums / counts.clamp(min=1))[:, :num_words]

    # ----------------------------------------------------------------------------- the token-level tag set
    def _tag_maps(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """For a token-level CRF: the token tag of each word label [C], and the word label each token tag
        reads as [K] (X, CLS, SEP, PAD -> O; OTHER -> MISC)."""
        token_labels = list(self.config.token_labels or [])
        word_labels = self.config.label_names
        to_token = [token_labels.index(token_label_of(label, token_labels)) for label in word_labels]
        to_word = [word_labels.index(word_label_of(label)) for label in token_labels]
        return torch.tensor(to_token, device=device), torch.tensor(to_word, device=device)

    def _token_tags(self, labels: torch.Tensor, words: WordLayout) -> torch.Tensor:
        """The authors' sub-token tags of word-level ``labels``: the word's tag at its first sub-token, X at
        its other sub-tokens, CLS at the first special token and SEP at the others."""
        token_labels = list(self.config.token_labels or [])
        word_ids, first, word_mask, token_mask = words
        to_token, _ = self._tag_maps(labels.device)
        tags = torch.full_like(word_ids, token_labels.index(CONTINUATION_TAG))
        special = token_mask & (word_ids < 0)
        first_real = token_mask & (token_mask.long().cumsum(1) == 1)
        tags = torch.where(special & first_real, token_labels.index(FIRST_SPECIAL_TAG), tags)
        tags = torch.where(special & ~first_real, token_labels.index(LAST_SPECIAL_TAG), tags)
        word_tags = to_token[labels.clamp(min=0)]
        slots = torch.where(word_mask, first, tags.shape[1])  # padded word slots go to a discarded column
        tags = torch.cat([tags, tags[:, :1]], dim=1).scatter(1, slots, word_tags)[:, :-1]
        return torch.where(token_mask, tags, 0)

    # ----------------------------------------------------------------------------------------------- loss
    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, words: WordLayout) -> torch.Tensor:
        if logits.shape[1] == 0:  # no sentence of the batch has a word: nothing to score
            return logits.sum() * 0.0
        if self.crf is None:
            flat = labels.masked_fill(~words.word_mask, LABEL_PAD_VALUE).reshape(-1)
            return F.cross_entropy(logits.reshape(-1, self.num_labels).float(), flat)
        if self.config.crf_level == "token":
            tags, mask = self._token_tags(labels, words), words.token_mask
        else:
            tags, mask = labels.clamp(min=0), words.word_mask
        has_positions = mask.any(1)  # a sentence without words has nothing to score (eq 10)
        nll = -self.crf.log_likelihood(logits, tags, _with_first_position(mask), checked=True) * has_positions
        total = nll.sum()
        if self.config.loss_reduction == "sum":
            return total
        return total / has_positions.sum().clamp(min=1)

    # ------------------------------------------------------------------------------------------- decoding
    @torch.no_grad()
    def _decode(self, logits: torch.Tensor, words: WordLayout) -> torch.Tensor:
        """Best tag per word as a word label id: Viterbi for the CRF (eq 11), argmax for softmax; -100 at padded
        word slots. A token-level CRF's best path is read at each word's first sub-token."""
        word_mask = words.word_mask
        if self.crf is None or logits.shape[1] == 0:
            best = logits.argmax(-1) if logits.shape[-1] else torch.zeros_like(word_mask, dtype=torch.long)
        elif self.config.crf_level == "token":
            path = self.crf.decode(logits, _with_first_position(words.token_mask), pad_value=0, checked=True)
            best = self._tag_maps(logits.device)[1][path.gather(1, words.first)]
        else:
            best = self.crf.decode(logits, _with_first_position(word_mask), pad_value=0, checked=True)
        return torch.where(word_mask, best, LABEL_PAD_VALUE)

    def _word_level(self, values: torch.Tensor, outputs: UMGFTokenClassifierOutput) -> torch.Tensor:
        """Sub-token-level per-tag values [B, T, K] read at each word's first sub-token and summed into the
        word labels they read as: [B, W, C]."""
        assert outputs.word_positions is not None
        at_words = values.gather(1, outputs.word_positions.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
        reading = F.one_hot(self._tag_maps(values.device)[1], self.num_labels).to(values.dtype)  # [K, C]
        return at_words @ reading

    @torch.no_grad()
    def tag_probabilities(self, outputs: UMGFTokenClassifierOutput) -> torch.Tensor:
        """Per-word tag probabilities [B, W, num_labels] of a forward's ``outputs``: CRF marginals
        (forward-backward; for a token-level CRF, the marginals at each word's first sub-token summed into the
        word labels they read as) or the softmax; 0 at padded word slots."""
        logits, word_mask = outputs.logits, outputs.word_mask
        assert logits is not None and word_mask is not None
        if self.crf is None:
            probabilities = logits.float().softmax(-1)
        elif self.config.crf_level == "token":
            assert outputs.token_mask is not None
            token_probabilities = self.crf.marginals(logits, _with_first_position(outputs.token_mask), checked=True)
            probabilities = self._word_level(token_probabilities, outputs)
        else:
            probabilities = self.crf.marginals(logits, _with_first_position(word_mask), checked=True)
        return probabilities * word_mask.unsqueeze(-1)

    @torch.no_grad()
    def entity_probabilities(
        self, outputs: UMGFTokenClassifierOutput, entities: Sequence[tuple[int, str, int, int]]
    ) -> torch.Tensor:
        """Probability of each entity ``(row, type, start, end)`` of a forward's ``outputs``: that words
        ``[start, end)`` of sentence ``row`` form exactly one entity of that type, summed over every tag
        sequence of the sentence, ``[len(entities)]``.

        With the CRF (eq 9) this is ``exp(log Z_allowed - log Z)``: the forward algorithm over emissions with the
        disallowed tags (`schema.entity_tag_masks`) set to -inf, i.e. the exact sum over the tag sequences in
        the set, not a product of per-word marginals. A token-level CRF constrains each word's first sub-token to
        the token tags that read as an allowed word tag and leaves the other sub-tokens free. With the softmax
        decoder the words are independent and it is the product over words of the allowed tags' mass.
        """
        logits, word_mask, first = outputs.logits, outputs.word_mask, outputs.word_positions
        assert logits is not None and word_mask is not None and first is not None
        label2id = {label: i for i, label in enumerate(self.config.label_names)}
        word_counts = word_mask.sum(1).tolist()
        rows, masks, owners = [], [], []
        for index, (row, entity_type, start, end) in enumerate(entities):
            for mask in entity_tag_masks(label2id, entity_type, start, end, word_counts[row], word_mask.shape[1]):
                rows.append(row)
                masks.append(mask)
                owners.append(index)
        probabilities = torch.zeros(len(entities), dtype=torch.float32, device=logits.device)
        if not rows:
            return probabilities
        rows_t = torch.tensor(rows, device=logits.device)
        allowed = torch.stack(masks).to(logits.device) | ~word_mask[rows_t].unsqueeze(-1)  # [K, W, C]
        emissions = logits[rows_t].float()
        if self.crf is None:
            per_mask = (emissions.softmax(-1) * allowed).sum(-1).prod(-1)
        else:
            if self.config.crf_level == "token":
                assert outputs.token_mask is not None
                sequence_mask = _with_first_position(outputs.token_mask[rows_t])
                reading = self._tag_maps(logits.device)[1]
                # [K, T + 1, tags]: padded word slots write to the extra, discarded position
                token_allowed = torch.ones_like(torch.cat([emissions, emissions[:, :1]], 1), dtype=torch.bool)
                slots = torch.where(word_mask[rows_t], first[rows_t], emissions.shape[1])
                positions = slots.unsqueeze(-1).expand(-1, -1, emissions.shape[-1])
                token_allowed = token_allowed.scatter(1, positions, allowed[:, :, reading])[:, :-1]
                constrained = emissions.masked_fill(~token_allowed, float("-inf"))
            else:
                sequence_mask = _with_first_position(word_mask[rows_t])
                constrained = emissions.masked_fill(~allowed, float("-inf"))
            log_z = self.crf.log_partition(emissions, sequence_mask, checked=True)
            per_mask = (self.crf.log_partition(constrained, sequence_mask, checked=True) - log_z).exp()
        return probabilities.index_add_(0, torch.tensor(owners, device=logits.device), per_mask)


__all__ = [
    "UMGFForTokenClassification",
    "UMGFModel",
    "UMGFModelOutput",
    "UMGFPreTrainedModel",
    "UMGFTokenClassifierOutput",
    "WordLayout",
    "build_vision_backbone",
    "first_subtoken_index",
    "word_layout",
]
