"""UMGF: unified multi-modal graph fusion for multimodal NER (Zhang et al., AAAI 2021).

Tensor contract (batch B, sub-tokens T, words W, objects O, backbone feature size F):

- ``input_ids`` [B, T], ``attention_mask`` [B, T] (1 real, 0 padding), ``token_type_ids`` [B, T] (optional).
- ``word_ids`` [B, T] long: the word each sub-token belongs to, numbered 0..n-1 in order; -1 for special
  tokens and padding. Each word is represented by its first sub-token. ``None``: every attended token
  is its own word.
- ``pixel_values`` [B, O, 3, H, W]: object crops, already transformed for the backbone; **or**
  ``object_features`` [B, O, F]: pooled backbone features precomputed for the crops (a feature cache).
- ``object_mask`` [B, O]: 1 for a real object, 0 for padding (default: all real).
- ``inter_modal_adjacency`` [B, T, O]: 1 where sub-token t and object o share an inter-modal edge
  (default: every real token linked to every real object, the authors' release wiring).
- ``labels`` [B, W'] long (W' >= W): word-level tag ids, -100 at padded word slots.

Every visual input is optional: without them, or with O = 0, no object reaches any word and the model
is a plain Transformer encoder over BERT outputs (paper, footnote 1).

Graph: text nodes are the sub-tokens (BERT outputs); a word's label is read at its first sub-token.
Intra-modal edges are complete, so intra-modal fusion is ordinary self-attention (eq 1-2). Inter-modal
fusion (eq 3-6) sums gated messages over the adjacency; the gates are computed as ``W1 C_x`` and
``W2 C_o`` broadcast over (token, object) pairs, never from a concatenated [B, T, O, 2d] tensor.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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
from .schema_umgf import entity_tag_masks
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


def node_mlp(in_dim: int, config: UMGFConfig) -> nn.Sequential:
    """The text / visual MLP with ReLU that projects node features to d (paper, "Multi-modal Graph")."""
    return nn.Sequential(
        nn.Linear(in_dim, config.hidden_size),
        nn.ReLU(),
        nn.Dropout(config.dropout),
        nn.Linear(config.hidden_size, config.hidden_size),
    )


class UMGFSelfAttention(nn.Module):
    """Multi-head self-attention within one modality (eq 1-2) with residual + LayerNorm, on SDPA."""

    def __init__(self, config: UMGFConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.attention_dropout = config.attention_dropout
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """hidden [B, N, d], key_mask [B, N] bool (True = real node). Returns C = LN(H + MHA(H, H, H))."""
        batch, length, dim = hidden.shape
        q, k, v = self.qkv(hidden).view(batch, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
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
        return self.norm(hidden + self.dropout(self.out(context)))


class UMGFFeedForward(nn.Module):
    """Position-wise FFN (eq 7-8) with residual + LayerNorm."""

    def __init__(self, config: UMGFConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden + self.dropout(self.fc2(self.dropout(F.relu(self.fc1(hidden))))))


class UMGFCrossModalGate(nn.Module):
    """Gated inter-modal fusion for one receiving modality (eq 3-4 for words, eq 5-6 for objects).

    ``R_i = C_i + sum_j A_ij * alpha_ij ⊙ C'_j`` with ``alpha_ij = sigmoid(W_self C_i + W_other C'_j)``.
    ``W [C_i; C'_j]`` equals ``W_self C_i + W_other C'_j``, so each side is projected once and the gate
    is formed by broadcasting over the (i, j) pairs.
    """

    def __init__(self, config: UMGFConfig) -> None:
        super().__init__()
        self.w_self = nn.Linear(config.hidden_size, config.hidden_size)  # W1 (eq 4) / W3 (eq 6)
        self.w_other = nn.Linear(config.hidden_size, config.hidden_size, bias=False)  # W2 (eq 4) / W4 (eq 6)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, c_self: torch.Tensor, c_other: torch.Tensor, adjacency: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """c_self [B, N, d], c_other [B, M, d], adjacency [B, N, M] float.

        Returns R [B, N, d] and the edge-masked mean gate over d, [B, N, M] (for explanations).
        """
        gate = torch.sigmoid(self.w_self(c_self).unsqueeze(2) + self.w_other(c_other).unsqueeze(1))  # [B, N, M, d]
        gate = gate * adjacency.unsqueeze(-1)
        message = torch.einsum("bnmd,bmd->bnd", gate, c_other)  # sum over neighbours (eq 3 / eq 5)
        return c_self + self.dropout(message), gate.mean(-1)


class UMGFModalityBlock(nn.Module):
    """The per-modality parameters of one fusion layer: self-attention, cross-modal gate, FFN."""

    def __init__(self, config: UMGFConfig, self_attention: bool = True) -> None:
        super().__init__()
        self.attention = UMGFSelfAttention(config) if self_attention else None
        self.gate = UMGFCrossModalGate(config) if config.use_visual else None
        self.ffn = UMGFFeedForward(config)


class UMGFFusionLayer(GradientCheckpointingLayer):
    """One graph-based multi-modal fusion layer (eq 1-8): intra-modal, then inter-modal fusion, then FFN."""

    def __init__(self, config: UMGFConfig) -> None:
        super().__init__()
        self.text = UMGFModalityBlock(config)
        # "w/o Ind" shares one set of parameters between the modalities; "w/o VCorr" drops eq 2.
        self.visual = (
            UMGFModalityBlock(config, self_attention=config.visual_self_attention)
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
        c_x = self.text.attention(h_x, text_mask)  # eq 1
        if h_o is None:
            return self.text.ffn(c_x), None, None  # no objects: a Transformer layer
        visual = self.visual or self.text
        c_o = visual.attention(h_o, object_mask) if self.visual_self_attention else h_o  # eq 2
        r_x, alpha = self.text.gate(c_x, c_o, adjacency)  # eq 3-4
        r_o, _ = visual.gate(c_o, c_x, adjacency.transpose(1, 2))  # eq 5-6
        h_o = visual.ffn(r_o) * object_mask.unsqueeze(-1).to(r_o.dtype)  # eq 8; padded objects stay zero
        return self.text.ffn(r_x), h_o, alpha  # eq 7


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
        loss: negative log-likelihood of the gold tags (eq 10) averaged over sequences (CRF), or the mean
            token cross-entropy (softmax decoder).
        logits: word-level emission scores, [B, W, num_labels].
        predictions: best tag per word (Viterbi, eq 11, or argmax), [B, W], -100 at padded word slots.
            Filled in eval mode or when no labels are given.
        word_mask: [B, W] bool, True at real words.
        gates: see `UMGFModelOutput.gates`.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    predictions: torch.Tensor | None = None
    word_mask: torch.Tensor | None = None
    gates: tuple[torch.Tensor, ...] | None = None


class UMGFPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading for UMGF models.

    The text encoder is a `PreTrainedModel` and initialises itself; the timm vision backbone is initialised
    by timm when built, so `_init_weights` leaves both alone (a loaded pretrained backbone is never wiped).
    """

    config_class = UMGFConfig
    base_model_prefix = "umgf"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["UMGFFusionLayer"]

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
        """Prepare the model for fast inference and return it: eval mode, the vision backbone's weights in
        channels-last layout (oneDNN / cuDNN NHWC convolutions) and, with ``compile_backbone``, the backbone's
        forward compiled in place by TorchInductor with weight freezing (BatchNorm folded into the
        convolutions, weights pre-packed). Outputs equal the eager model's up to float rounding
        (`tests/test_speed_options.py`); the speed-up is measured in BENCHMARKS.md.

        Call it once the weights are loaded: frozen weights are baked into the compiled code, so a model whose
        weights change afterwards must be optimised anew (load into a fresh model). Compiling needs a C++
        compiler on CPU and is paid on the first batch and once more when the number of crops in a batch first
        changes (torch then compiles for any number).
        """
        self.eval()
        base = getattr(self, self.base_model_prefix, self)
        backbone = getattr(base, "vision_backbone", None)
        if backbone is not None:
            backbone.to(memory_format=torch.channels_last)
            if compile_backbone:
                backbone.compile(options={"freezing": True})
        return self

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
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
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
        sub._is_hf_initialized = True


def _text_encoder(factory: Callable[..., nn.Module], source: PreTrainedConfig | str) -> nn.Module:
    """``AutoModel.from_config`` / ``from_pretrained`` without the pooler where the architecture allows it."""
    try:
        return factory(source, add_pooling_layer=False)
    except TypeError:  # encoders that have no pooler take no such argument
        return factory(source)


class UMGFModel(UMGFPreTrainedModel):
    """The UMGF encoder: text encoder + object encoder + L graph-based multi-modal fusion layers.

    See the module docstring for the tensor contract. Pass ``text_encoder`` / ``vision_backbone`` to use
    modules that are already built (pretrained); `UMGFForTokenClassification.from_text_vision_pretrained`
    does that for you.
    """

    def __init__(
        self,
        config: UMGFConfig,
        text_encoder: nn.Module | None = None,
        vision_backbone: nn.Module | None = None,
    ) -> None:
        super().__init__(config)
        if text_encoder is None:
            text_encoder = _text_encoder(AutoModel.from_config, config.text_config)
        else:
            _mark_initialized(text_encoder)
        self.text_encoder = text_encoder
        self.text_mlp = node_mlp(config.text_config.hidden_size, config)
        if config.use_visual:
            if vision_backbone is None:
                vision_backbone = timm.create_model(
                    config.vision_backbone, pretrained=False, num_classes=0, **(config.vision_backbone_kwargs or {})
                )
            if vision_backbone.num_features != config.vision_feature_dim:
                raise ValueError(
                    f"vision backbone {config.vision_backbone!r} gives {vision_backbone.num_features}-d features, "
                    f"but config.vision_feature_dim is {config.vision_feature_dim}"
                )
            _mark_initialized(vision_backbone)
            self.vision_backbone = vision_backbone
            self.visual_mlp = node_mlp(config.vision_feature_dim, config)
        self.layers = nn.ModuleList([UMGFFusionLayer(config) for _ in range(config.num_fusion_layers)])
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_encoder.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_encoder.set_input_embeddings(value)

    def encode_objects(self, pixel_values: torch.Tensor, object_mask: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features of the real object crops: [B, O, 3, H, W] -> [B, O, F] (zeros at padding).

        With the backbone in eval mode, identical crops are encoded once (exact: the same features).
        """
        if not self.config.use_visual:
            raise ValueError("this UMGF model has no visual branch (config.use_visual=False)")
        if getattr(self, "vision_backbone", None) is None:
            raise ValueError(
                "this model's vision backbone was released (vision_backbone=None, e.g. to save memory "
                "when training from cached features): give object_features instead of pixel_values"
            )
        if pixel_values.dim() != 5:
            raise ValueError(f"pixel_values must be [batch, objects, 3, H, W], got shape {tuple(pixel_values.shape)}")
        real = object_mask.bool()
        features = pixel_values.new_zeros(*pixel_values.shape[:2], self.config.vision_feature_dim)
        if real.any():
            crops = pixel_values[real]
            inverse = None
            if not self.vision_backbone.training:
                # Identical crops (one box grounded from several phrases) go through the backbone once. Only in
                # eval mode: in training, BatchNorm's batch statistics depend on every crop of the batch.
                _, inverse = torch.unique(crops.flatten(1), dim=0, return_inverse=True)
                first = torch.full((int(inverse.max()) + 1,), len(crops), device=crops.device)
                first = first.scatter_reduce(0, inverse, torch.arange(len(crops), device=crops.device), "amin")
                crops, inverse = (crops[first], inverse) if len(first) < len(crops) else (crops, None)
            # NHWC crops let oneDNN / cuDNN pick their channels-last convolutions (BENCHMARKS.md)
            encoded = self.vision_backbone(crops.contiguous(memory_format=torch.channels_last))
            features[real] = (encoded if inverse is None else encoded[inverse]).to(features.dtype)
        return features

    def _visual_inputs(
        self,
        pixel_values: torch.Tensor | None,
        object_features: torch.Tensor | None,
        object_mask: torch.Tensor | None,
        inter_modal_adjacency: torch.Tensor | None,
        attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Initial object states H_o^(0) [B, O, d], the object mask and the adjacency; None without objects."""
        if pixel_values is not None and object_features is not None:
            raise ValueError("give either pixel_values or object_features, not both")
        given = pixel_values if pixel_values is not None else object_features
        if given is None or given.shape[1] == 0 or not self.config.use_visual:
            if given is not None and given.shape[1] > 0:
                raise ValueError("this UMGF model has no visual branch (config.use_visual=False) but got objects")
            return None
        batch, num_objects = given.shape[:2]
        if object_mask is None:
            object_mask = torch.ones(batch, num_objects, dtype=torch.bool, device=given.device)
        if object_mask.shape != (batch, num_objects):
            raise ValueError(f"object_mask must be [{batch}, {num_objects}], got {tuple(object_mask.shape)}")
        object_mask = object_mask.bool()
        if object_features is None:
            object_features = self.encode_objects(pixel_values, object_mask)
        elif object_features.shape[-1] != self.config.vision_feature_dim:
            raise ValueError(
                f"object_features must have {self.config.vision_feature_dim} features, got {object_features.shape[-1]}"
            )
        h_o = self.visual_mlp(object_features) * object_mask.unsqueeze(-1).to(object_features.dtype)
        text_real = attention_mask.bool()
        if inter_modal_adjacency is None:
            adjacency = text_real.unsqueeze(2) & object_mask.unsqueeze(1)
        else:
            if inter_modal_adjacency.shape != (batch, attention_mask.shape[1], num_objects):
                raise ValueError(
                    f"inter_modal_adjacency must be [{batch}, {attention_mask.shape[1]}, {num_objects}], "
                    f"got {tuple(inter_modal_adjacency.shape)}"
                )
            adjacency = inter_modal_adjacency.bool() & text_real.unsqueeze(2) & object_mask.unsqueeze(1)
        return h_o, object_mask, adjacency.to(h_o.dtype)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        object_features: torch.Tensor | None = None,
        object_mask: torch.Tensor | None = None,
        inter_modal_adjacency: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_gates: bool = False,
        **kwargs: Any,
    ) -> UMGFModelOutput:
        """Encode a batch of (sentence, objects) graphs; see the module docstring for the inputs."""
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference is None:
            raise ValueError("UMGFModel needs input_ids or inputs_embeds")
        if attention_mask is None:
            attention_mask = torch.ones(reference.shape[:2], dtype=torch.long, device=reference.device)
        text_states = None
        if self.config.text_packing and can_pack(self.text_encoder):
            text_states = encode_packed(self.text_encoder, attention_mask, input_ids, inputs_embeds, token_type_ids)
        if text_states is None:  # not packable, or packing would not save enough (see text_packing.py)
            encoder_kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            text_states = self.text_encoder(
                input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **encoder_kwargs
            ).last_hidden_state
        h_x = text_states
        if self.config.use_position_encoding:
            h_x = h_x + sinusoidal_position_encoding(h_x.shape[1], h_x.shape[2], h_x.device, h_x.dtype)
        h_x = self.text_mlp(h_x)  # H_x^(0)

        visual = self._visual_inputs(pixel_values, object_features, object_mask, inter_modal_adjacency, attention_mask)
        h_o, object_mask, adjacency = visual if visual is not None else (None, None, None)
        text_mask = attention_mask.bool()
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


def first_subtoken_index(word_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Position of each word's first sub-token and the word mask: ([B, W] long, [B, W] bool).

    Raises a ValueError when words are not numbered 0..n-1 in order in some sequence.
    """
    batch, length = word_ids.shape
    num_words = int(word_ids.max().item()) + 1 if word_ids.numel() else 0
    previous = torch.cat([word_ids.new_full((batch, 1), -1), word_ids[:, :-1]], dim=1)
    is_first = (word_ids >= 0) & (word_ids != previous)
    slot = torch.where(is_first, word_ids, torch.full_like(word_ids, num_words))  # num_words = discard slot
    positions = torch.arange(length, device=word_ids.device).expand(batch, -1)
    first = word_ids.new_zeros(batch, num_words + 1).scatter_(1, slot, positions)[:, :num_words]
    counts = word_ids.new_zeros(batch, num_words + 1).scatter_add_(1, slot, torch.ones_like(word_ids))[:, :num_words]
    word_mask = counts > 0
    if bool((counts > 1).any()) or bool((~word_mask[:, :-1] & word_mask[:, 1:]).any()):
        bad = int(((counts > 1).any(1) | (~word_mask[:, :-1] & word_mask[:, 1:]).any(1)).nonzero()[0, 0])
        raise ValueError(
            f"word_ids of batch item {bad} must number words 0..n-1 in order with each word's sub-tokens "
            f"contiguous; got {word_ids[bad].tolist()}"
        )
    return first, word_mask


class UMGFForTokenClassification(UMGFPreTrainedModel):
    """UMGF with a word-level decoder: a linear-chain CRF (eq 9-11, default) or a softmax."""

    def __init__(
        self,
        config: UMGFConfig,
        text_encoder: nn.Module | None = None,
        vision_backbone: nn.Module | None = None,
    ) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.umgf = UMGFModel(config, text_encoder=text_encoder, vision_backbone=vision_backbone)
        in_dim = {
            "fused": config.hidden_size,
            "concat": config.text_config.hidden_size + config.hidden_size,
            "text": config.text_config.hidden_size,
        }[config.classifier_input]
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(in_dim, config.num_labels)
        self.crf = CRF(config.num_labels) if config.decoder_type == "crf" else None
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
            backbone = timm.create_model(
                vision_backbone,
                pretrained=bool(vision_weights),
                pretrained_cfg_overlay=overlay,
                num_classes=0,
                **(config_kwargs.get("vision_backbone_kwargs") or {}),
            )
            config_kwargs = {
                **config_kwargs,
                "vision_backbone": vision_backbone,
                "vision_feature_dim": backbone.num_features,
            }
        else:
            config_kwargs = {**config_kwargs, "use_visual": False}
        config = UMGFConfig(text_config=text_config, **config_kwargs)
        return cls(config, text_encoder=text_encoder, vision_backbone=backbone)

    def word_features(self, outputs: UMGFModelOutput) -> torch.Tensor:
        """The per-sub-token features the decoder reads, by ``config.classifier_input``: [B, T, *]."""
        if self.config.classifier_input == "fused":
            return outputs.last_hidden_state
        if self.config.classifier_input == "text":
            return outputs.text_encoder_hidden_state
        return torch.cat([outputs.text_encoder_hidden_state, outputs.last_hidden_state], dim=-1)

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
        """Tag every word; with ``labels``, also return the loss. See the module docstring for the inputs."""
        outputs = self.umgf(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            pixel_values=pixel_values,
            object_features=object_features,
            object_mask=object_mask,
            inter_modal_adjacency=inter_modal_adjacency,
            inputs_embeds=inputs_embeds,
            output_gates=output_gates,
        )
        features = self.word_features(outputs)
        if word_ids is None:
            mask = (
                attention_mask if attention_mask is not None else torch.ones(features.shape[:2], device=features.device)
            )
            word_ids = torch.where(mask.bool(), mask.long().cumsum(1) - 1, -1)
        first, word_mask = first_subtoken_index(word_ids.to(features.device))
        word_states = features.gather(1, first.unsqueeze(-1).expand(-1, -1, features.shape[-1]))
        logits = self.classifier(self.dropout(word_states))  # emission scores [B, W, C]

        loss = None
        if labels is not None:
            labels = self._word_labels(labels, word_mask)
            loss = self._loss(logits, labels, word_mask)
        predictions = None
        if labels is None or not self.training:
            predictions = self.decode(logits, word_mask)
        return UMGFTokenClassifierOutput(
            loss=loss, logits=logits, predictions=predictions, word_mask=word_mask, gates=outputs.gates
        )

    def _word_labels(self, labels: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """Labels cut to the words present in the input, checked against the word mask."""
        num_words = word_mask.shape[1]
        if labels.dim() != 2 or labels.shape[0] != word_mask.shape[0] or labels.shape[1] < num_words:
            raise ValueError(
                f"labels must be word-level [batch, >= {num_words} words], got shape {tuple(labels.shape)}"
            )
        labels = labels[:, :num_words].to(word_mask.device)
        if self.crf is not None:
            missing = word_mask & (labels < 0)
            if bool(missing.any()):
                b, w = (int(i) for i in missing.nonzero()[0])
                raise ValueError(
                    f"the CRF needs a label for every word in the input, but batch item {b} word {w} "
                    f"has {labels[b, w].item()}"
                )
        outside = (labels >= self.num_labels) & word_mask
        if bool(outside.any()):
            raise ValueError(f"labels must be < num_labels={self.num_labels}; got {int(labels[outside].max())}")
        return labels

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        if self.crf is None:
            return F.cross_entropy(
                logits.reshape(-1, self.num_labels), labels.masked_fill(~word_mask, -100).reshape(-1)
            )
        rows = word_mask.any(1)  # sequences with at least one word (a sequence without words has nothing to score)
        if not bool(rows.any()):
            return logits.sum() * 0.0
        nll = -self.crf.log_likelihood(logits[rows], labels[rows], word_mask[rows])  # eq 10
        return nll.mean()

    @torch.no_grad()
    def decode(self, logits: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """Best tag per word: Viterbi for the CRF (eq 11), argmax for softmax; -100 at padded slots."""
        predictions = torch.full(word_mask.shape, -100, dtype=torch.long, device=logits.device)
        if self.crf is None:
            return torch.where(word_mask, logits.argmax(-1), predictions)
        rows = word_mask.any(1)
        if bool(rows.any()):
            predictions[rows] = self.crf.decode(logits[rows], word_mask[rows])
        return predictions

    @torch.no_grad()
    def entity_probabilities(
        self, logits: torch.Tensor, word_mask: torch.Tensor, entities: Sequence[tuple[int, str, int, int]]
    ) -> torch.Tensor:
        """Probability of each entity ``(row, type, start, end)``: that words ``[start, end)`` of sentence ``row``
        form exactly one entity of that type, summed over every tag sequence of the sentence, ``[len(entities)]``.

        With the CRF (eq 9) this is ``exp(log Z_allowed - log Z)``: the forward algorithm over emissions with the
        disallowed tags (`schema_umgf.entity_tag_masks`) set to -inf, i.e. the exact sum over the tag sequences in
        the set, not a product of per-word marginals. With the softmax decoder the words are independent and it
        is the product over words of the allowed tags' probability mass.
        """
        label2id = {label: int(i) for i, label in self.config.id2label.items()}
        rows, masks, owners = [], [], []
        for index, (row, entity_type, start, end) in enumerate(entities):
            num_words = int(word_mask[row].sum())
            for mask in entity_tag_masks(label2id, entity_type, start, end, num_words, logits.shape[1]):
                rows.append(row)
                masks.append(mask)
                owners.append(index)
        probabilities = logits.new_zeros(len(entities), dtype=torch.float32)
        if not rows:
            return probabilities
        rows_t = torch.tensor(rows, device=logits.device)
        emissions, mask = logits[rows_t].float(), word_mask[rows_t]
        allowed = torch.stack(masks).to(logits.device) | ~mask.unsqueeze(-1)
        if self.crf is None:
            per_mask = (emissions.softmax(-1) * allowed).sum(-1).prod(-1)
        else:
            constrained = emissions.masked_fill(~allowed, float("-inf"))
            per_mask = (self.crf.log_partition(constrained, mask) - self.crf.log_partition(emissions, mask)).exp()
        return probabilities.index_add_(0, torch.tensor(owners, device=logits.device), per_mask)

    def tag_probabilities(self, logits: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """Per-word tag probabilities: CRF marginals (forward-backward) or the softmax; 0 at padded slots."""
        if self.crf is None:
            return logits.softmax(-1) * word_mask.unsqueeze(-1).to(logits.dtype)
        probs = logits.new_zeros(logits.shape)
        rows = word_mask.any(1)
        if bool(rows.any()):
            probs[rows] = self.crf.marginals(logits[rows], word_mask[rows])
        return probs


__all__ = [
    "UMGFForTokenClassification",
    "UMGFModel",
    "UMGFModelOutput",
    "UMGFPreTrainedModel",
    "UMGFTokenClassifierOutput",
]
