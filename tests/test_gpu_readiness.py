"""What the GPU needs, checked on the CPU: few host-device syncs per step, half-precision models fed by
the collator and the pipeline, the CRF in float32, masks in the queries' dtype, the attention implementations.
`benchmarks/checks/gpu_check.sh` runs the model tests and training steps on a real GPU."""

from __future__ import annotations

import pytest
import torch
import transformers
from helpers import saved_tiny_ner_folder
from sync_counting import SyncCounter
from transformers import pipeline

from modeling_umgf import CRF, UMGFForTokenClassification
from modeling_umgf.tools.tiny_models import ragged_batch, tiny_config


def test_the_sync_counter_sees_syncs() -> None:
    """The counter itself: device values read on the host count, host-only work does not."""
    x = torch.ones(3)
    with SyncCounter([x]) as counter:
        _ = float(x.sum())
        _ = x[x > 0]
        host = x.to("cpu")
        _ = host.tolist() + torch.tensor([1, 2]).tolist()
    assert counter.syncs == ["__float__", "__getitem__ with a boolean mask", "copy to the host"]


@pytest.mark.parametrize("accelerator", [True, False])
def test_a_training_step_syncs_at_most_three_times(accelerator: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forward + backward of the default path (paper preset, packed text, crops through the backbone): the text
    packing reads the mask once, the input checks read their verdict once, the visual branch reads which objects
    are real once. That is the accelerator's path, where the text is packed with the block mask (emulated here
    by the block mode); on a CPU, where reading values back costs nothing, transformers' own packing (when the
    installed version does it) reads once more whether the rows hold several sequences."""
    import modeling_umgf.text_packing as text_packing

    library = not accelerator and text_packing.library_separates_packed_sequences()
    if accelerator:
        monkeypatch.setattr(text_packing, "library_separates_packed_sequences", lambda: False)
    torch.manual_seed(0)
    model = UMGFForTokenClassification(tiny_config()).train()
    batch = ragged_batch()
    with SyncCounter([*model.parameters(), *model.buffers(), *batch.values()]) as counter:
        model(**batch).loss.backward()
    assert counter.syncs.count("copy to the host") == 1  # the text packing really ran
    if library:
        assert counter.syncs.count("__bool__") >= 1, counter.syncs
        counter.syncs.remove("__bool__")  # find_packed_sequence_indices: are there packed sequences at all?
    assert len(counter.syncs) <= 3, counter.syncs


def test_a_half_precision_model_takes_the_collators_float32_inputs(tmp_path_factory) -> None:
    """A model loaded in bfloat16 gets float32 crops and features from the collator and the pipeline."""
    torch.manual_seed(0)
    model = UMGFForTokenClassification(tiny_config()).eval()
    batch = {k: v for k, v in ragged_batch().items() if k != "labels"}
    reference = model(**batch).predictions
    half = model.to(torch.bfloat16)
    assert batch["pixel_values"].dtype == torch.float32
    out = half(**batch)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()
    assert (out.predictions == reference).float().mean() > 0.5  # the same model, rounded
    features = half.umgf.encode_objects(batch["pixel_values"], batch["object_mask"]).float()  # float32 features
    with_features = {k: v for k, v in batch.items() if k != "pixel_values"}
    assert torch.isfinite(half(**with_features, object_features=features).logits.float()).all()
    from test_pipeline import quadrant_image

    ner = pipeline(model=str(saved_tiny_ner_folder(tmp_path_factory)), trust_remote_code=True, dtype=torch.bfloat16)
    entities = ner("Kawhi Leonard wins the fan vote", image=quadrant_image())
    assert entities and all(e["boxes"] for e in entities)
    assert next(ner.model.crf.parameters()).dtype == torch.float32  # kept in float32 when loading in bfloat16


def test_the_crf_computes_in_float32_whatever_its_dtype() -> None:
    """A bfloat16 CRF (a model cast with .to(bfloat16)) decodes and scores as its float32 copy does on the same
    values: summing a sentence's scores in bfloat16 would change paths and probabilities."""
    torch.manual_seed(0)
    crf = CRF(9)
    for parameter in crf.parameters():
        torch.nn.init.uniform_(parameter, -3, 3)
    half = CRF(9).to(torch.bfloat16)
    half.load_state_dict({k: v.to(torch.bfloat16) for k, v in crf.state_dict().items()})
    full = CRF(9)
    full.load_state_dict({k: v.float() for k, v in half.state_dict().items()})  # the same, rounded, values
    emissions = (torch.randn(6, 30, 9) * 4).to(torch.bfloat16)
    mask = torch.arange(30) < torch.tensor([30, 25, 18, 9, 3, 1])[:, None]
    assert torch.equal(half.decode(emissions, mask), full.decode(emissions.float(), mask))
    torch.testing.assert_close(half.marginals(emissions, mask), full.marginals(emissions.float(), mask))
    assert half.log_partition(emissions, mask).dtype == torch.float32


@pytest.mark.parametrize("block", [True, False])
def test_the_packed_text_mask_suits_the_queries_under_autocast(block: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """SDPA gets the packing's boolean mask (no dtype of its own), so bfloat16 autocast runs and gives the padded
    model's outputs within bfloat16 rounding; with transformers' own packing (where the installed version does it)
    BERT gets no mask and builds its own, with the same outputs."""
    import modeling_umgf.text_packing as text_packing

    if block:
        monkeypatch.setattr(text_packing, "library_separates_packed_sequences", lambda: False)
    elif not text_packing.library_separates_packed_sequences():
        pytest.skip(f"transformers {transformers.__version__} < {text_packing.LIBRARY_PACKING_SINCE}")
    torch.manual_seed(0)
    packed = UMGFForTokenClassification(tiny_config()).eval()
    padded = UMGFForTokenClassification(tiny_config(text_packing=False)).eval()
    padded.load_state_dict(packed.state_dict())
    batch = {k: v for k, v in ragged_batch().items() if k != "labels"}
    seen = []
    encoder = packed.umgf.text_encoder
    hook = encoder.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs.get("attention_mask")), with_kwargs=True
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = packed(**batch).logits, padded(**batch).logits
    hook.remove()
    if block:
        assert seen and seen[0].dtype == torch.bool and seen[0].dim() == 4  # the packed rows' block mask
    else:
        assert seen == [None]  # packed rows, no mask: BERT finds the sequences in the position ids
    torch.testing.assert_close(a.float(), b.float(), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_attention_implementations_load(tmp_path_factory, implementation) -> None:
    folder = saved_tiny_ner_folder(tmp_path_factory)
    model = UMGFForTokenClassification.from_pretrained(folder, attn_implementation=implementation)
    assert model.umgf.text_encoder.config._attn_implementation == implementation


def test_flash_attention_is_asked_of_the_kernel_not_refused_by_the_model(tmp_path_factory) -> None:
    """Without flash-attn (or a GPU), loading with flash_attention_2 fails for that reason, not because UMGF does
    not support it."""
    folder = saved_tiny_ner_folder(tmp_path_factory)
    try:
        UMGFForTokenClassification.from_pretrained(folder, attn_implementation="flash_attention_2")
    except (ImportError, ValueError) as error:
        assert "does not support" not in str(error), error
