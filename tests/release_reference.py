"""An independent, plain implementation of the authors' released UMGF network (MMNerModel of ddp_mmner.py in
github.com/TransformersWsz/UMGF), at tiny size, with their module names, so its ``state_dict()`` has the key names
and shapes of their checkpoints. Written from the description of their network (a review of their code and the
paper), with loops and explicit tensors instead of this package's fused layers: separate query / key / value maps,
object attention with no value or output map, ``Linear(2d, d)`` gates on concatenations, LayerNorm after every
residual sum, a CRF over every sub-token (forward algorithm and Viterbi written per sentence)."""

from __future__ import annotations

import math

import timm
import torch
from torch import nn
from transformers import BertConfig, BertModel

# their config.py's tag set, in its id order
TAGS = ["PAD", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-OTHER", "I-OTHER", "O", "X", "CLS", "SEP"]
HEADS = 8


class Norm(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(size)


class Attention(nn.Module):
    def __init__(self, size: int, value: bool = True) -> None:
        super().__init__()
        self.value = value
        self.linears = nn.ModuleList([nn.Linear(size, size) for _ in range(4 if value else 2)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, size = x.shape
        dk = size // HEADS

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, HEADS, dk).transpose(1, 2)

        q, k = split(self.linears[0](x)), split(self.linears[1](x))
        v = split(self.linears[2](x)) if self.value else split(x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(dk)
        if mask is not None:
            scores = scores.masked_fill(mask[:, None, None, :] == 0, -1e9)
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, size)
        return self.linears[3](context) if self.value else context


class FeedForward(nn.Module):
    def __init__(self, size: int, inner: int) -> None:
        super().__init__()
        self.w_1, self.w_2 = nn.Linear(size, inner), nn.Linear(inner, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(torch.relu(self.w_1(x)))


class TransitionScores(nn.Module):
    def __init__(self, tags: int) -> None:
        super().__init__()
        self.start_transitions = nn.Parameter(torch.empty(tags).uniform_(-0.1, 0.1))
        self.end_transitions = nn.Parameter(torch.empty(tags).uniform_(-0.1, 0.1))
        self.transitions = nn.Parameter(torch.empty(tags, tags).uniform_(-0.1, 0.1))


class ReferenceRelease(nn.Module):
    """Their network at tiny size: BERT (with its pooler, as BertModel has), a timm test ResNet whose classifier is
    a Linear(features, features), d=16, FFN 32, 8 heads, 2 layers."""

    def __init__(self, bert: BertConfig, d: int = 16, inner: int = 32, layers: int = 2, features: int = 96) -> None:
        super().__init__()
        self.layers = layers
        self.bert = BertModel(bert)
        self.resnet = timm.create_model("test_resnet", num_classes=features)
        self.crf = TransitionScores(len(TAGS))
        self.hidden2tag = nn.Linear(bert.hidden_size + d, len(TAGS))
        self.trans_txt = nn.Linear(bert.hidden_size, d)
        self.trans_obj = nn.Sequential(
            nn.Linear(features, d), nn.ReLU(), nn.Dropout(0.4), nn.Linear(d, d), nn.ReLU(), nn.Dropout(0.4)
        )
        self.mhatt_x = nn.ModuleList([Attention(d) for _ in range(layers)])
        self.mhatt_o = nn.ModuleList([Attention(d, value=False) for _ in range(layers)])
        self.ffn_x = nn.ModuleList([FeedForward(d, inner) for _ in range(layers)])
        self.ffn_o = nn.ModuleList([FeedForward(d, inner) for _ in range(layers)])
        for name in ("res4mes_x", "res4mes_o", "xgate", "ogate", "res4ffn_x", "res4ffn_o"):
            setattr(self, name, nn.ModuleList([Norm(d) for _ in range(layers)]))
        self.mhatt_x2o = nn.ModuleList([nn.Linear(2 * d, d) for _ in range(layers)])
        self.mhatt_o2x = nn.ModuleList([nn.Linear(2 * d, d) for _ in range(layers)])

    def emissions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, crops: torch.Tensor, matrix: torch.Tensor
    ) -> torch.Tensor:
        """Their hidden2tag output [B, T, 13]: ``matrix`` [B, T, O] links tokens and crops."""
        x = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        batch, objects = crops.shape[:2]
        o = self.trans_obj(self.resnet(crops.flatten(0, 1)).view(batch, objects, -1))
        bert_x, x = x, self.trans_txt(x)
        tokens = x.shape[1]
        for i in range(self.layers):
            newx = self.res4mes_x[i].norm(x + self.mhatt_x[i](x, attention_mask))
            newo = self.res4mes_o[i].norm(o + self.mhatt_o[i](o))
            words_to = newx.unsqueeze(2).expand(-1, -1, objects, -1)  # [B, T, O, d]
            objects_to = newo.unsqueeze(1).expand(-1, tokens, -1, -1)
            x2o_gate = torch.sigmoid(self.mhatt_x2o[i](torch.cat([words_to, objects_to], -1)))
            x2o = (x2o_gate * matrix.unsqueeze(-1) * objects_to).sum(2)
            words_from = newx.unsqueeze(1).expand(-1, objects, -1, -1)  # [B, O, T, d]
            objects_from = newo.unsqueeze(2).expand(-1, -1, tokens, -1)
            o2x_gate = torch.sigmoid(self.mhatt_o2x[i](torch.cat([words_from, objects_from], -1)))
            o2x = (o2x_gate * matrix.transpose(1, 2).unsqueeze(-1) * words_from).sum(2)
            newx, newo = self.xgate[i].norm(newx + x2o), self.ogate[i].norm(newo + o2x)
            x = self.res4ffn_x[i].norm(newx + self.ffn_x[i](newx))
            o = self.res4ffn_o[i].norm(newo + self.ffn_o[i](newo))
        return self.hidden2tag(torch.cat([bert_x, x], -1))

    @torch.no_grad()
    def negative_log_likelihood(self, emissions: torch.Tensor, tags: list[list[int]]) -> float:
        """Sum over sentences of -log p(tags | emissions), one sentence at a time (float64 loops)."""
        start, end, trans = (
            p.double() for p in (self.crf.start_transitions, self.crf.end_transitions, self.crf.transitions)
        )
        total = 0.0
        for row, sequence in zip(emissions.double(), tags):
            score = start[sequence[0]] + row[0, sequence[0]]
            alpha = start + row[0]
            for i in range(1, len(sequence)):
                score = score + trans[sequence[i - 1], sequence[i]] + row[i, sequence[i]]
                alpha = torch.logsumexp(alpha.unsqueeze(1) + trans, 0) + row[i]
            score = score + end[sequence[-1]]
            total += float(torch.logsumexp(alpha + end, 0) - score)
        return total

    def viterbi(self, emissions: torch.Tensor, length: int) -> list[int]:
        """The best tag path of one sentence of ``length`` sub-tokens."""
        start, end, trans = (
            p.double() for p in (self.crf.start_transitions, self.crf.end_transitions, self.crf.transitions)
        )
        row = emissions.double()
        best, back = start + row[0], []
        for i in range(1, length):
            candidates = best.unsqueeze(1) + trans
            back.append(candidates.argmax(0))
            best = candidates.max(0).values + row[i]
        path = [int((best + end).argmax())]
        for pointers in reversed(back):
            path.append(int(pointers[path[-1]]))
        return path[::-1]
