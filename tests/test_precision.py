"""Inference precision (modeling_umgf/precision.py): what "auto" picks, what bf16 and int8 change and what they keep.

Agreement with fp32 on trained models is measured in BENCHMARKS.md (benchmarks/experiments/bench_precision.py); here the
tiny models check the mechanics against the float32 model on the same weights.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from helpers import saved_tiny_ner_folder
from test_pipeline import TWEET, quadrant_image
from torch import nn

from modeling_umgf import UMGFForTokenClassification
from modeling_umgf.crf import CRF
from modeling_umgf.model_free_grounding import GridGrounder
from modeling_umgf.pipeline_umgf import MultimodalNERPipeline
from modeling_umgf.precision import PRECISIONS, inference_copy, quantize_linear_int8, resolve_precision
from modeling_umgf.tools.cli import build_parser, load_pipeline
from modeling_umgf.tools.tiny_models import tiny_config, tiny_inputs, tiny_ner_model, tiny_ner_pipeline, tiny_processor


def set_cpu_flags(monkeypatch, avx512_bf16: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16"), (True, True, "bf16")],
)
def test_auto_picks_bf16_only_where_the_cpu_has_bf16_units(monkeypatch, avx512_bf16, amx, expected) -> None:
    set_cpu_flags(monkeypatch, avx512_bf16, amx)
    assert resolve_precision("auto", "cpu") == expected
    for explicit in ("fp32", "bf16", "int8"):  # an explicit choice is kept whatever the CPU has
        assert resolve_precision(explicit, "cpu") == explicit


@pytest.mark.parametrize(("capability", "expected"), [((8, 0), "bf16"), ((9, 0), "bf16"), ((7, 5), "fp32")])
def test_auto_on_cuda_follows_the_compute_capability(monkeypatch, capability, expected) -> None:
    set_cpu_flags(monkeypatch, True, True)  # the CPU's units do not matter for a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("auto", "cuda:0") == expected


def test_unknown_precision_and_int8_off_the_cpu_are_errors(monkeypatch) -> None:
    with pytest.raises(ValueError, match=r"unknown precision 'fp16'.*auto"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match=r"int8.*CPU only"):
        resolve_precision("int8", "cuda")
    with pytest.raises(ValueError, match="unknown precision"):
        tiny_ner_model().set_inference_precision("half")


def test_the_model_resolves_auto_by_the_cpu_flags(monkeypatch) -> None:
    set_cpu_flags(monkeypatch, False, False)
    assert tiny_ner_model().set_inference_precision("auto").inference_precision == "fp32"
    set_cpu_flags(monkeypatch, True, False)
    model = tiny_ner_model().set_inference_precision("auto")
    assert model.inference_precision == "bf16" and model.umgf.inference_precision == "bf16"
    assert tiny_ner_model().inference_precision == "fp32"  # the default: fp32 as trained


def record_dtypes(model: UMGFForTokenClassification) -> dict[str, list[torch.dtype]]:
    """Hooks recording the output dtype of the backbone, a linear map of the text encoder and of a fusion layer, and the
    emissions that reach the CRF."""
    seen: dict[str, list[torch.dtype]] = {"backbone": [], "text": [], "fusion": [], "crf": []}

    def hook(name):
        return lambda module, args, output: seen[name].append(
            (output[0] if isinstance(output, tuple) else getattr(output, "last_hidden_state", output)).dtype
        )

    model.umgf.vision_backbone.register_forward_hook(hook("backbone"))
    model.umgf.text_encoder.encoder.layer[0].intermediate.dense.register_forward_hook(hook("text"))
    model.umgf.layers[0].text.ffn.fc1.register_forward_hook(hook("fusion"))
    decode = model.crf.decode

    def recording_decode(emissions, *args, **kwargs):
        seen["crf"].append(emissions.dtype)
        return decode(emissions, *args, **kwargs)

    model.crf.decode = recording_decode  # type: ignore[method-assign]
    return seen


def test_bf16_runs_the_encoder_in_bfloat16_and_keeps_the_crf_in_float32() -> None:
    reference = tiny_ner_model()
    model = copy.deepcopy(reference).set_inference_precision("bf16")
    seen = record_dtypes(model)
    x = tiny_inputs(batch=3, tokens=10, objects=3)
    with torch.inference_mode():
        expected, out = reference(**x), model(**x)
    assert seen["backbone"] == [torch.bfloat16] and seen["text"] == [torch.bfloat16]
    assert seen["fusion"] == [torch.bfloat16] and seen["crf"] == [torch.float32]
    assert out.logits.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.crf.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: the weights stay float32
    # bfloat16 keeps 8 bits of mantissa: the emissions move by about 1 % of their scale, the tags do not
    scale = expected.logits.abs().max()
    torch.testing.assert_close(out.logits, expected.logits, rtol=0, atol=0.03 * float(scale))
    assert not torch.equal(out.logits, expected.logits)  # it did compute in lower precision
    assert torch.equal(out.predictions, expected.predictions)


def test_bf16_does_not_touch_training() -> None:
    model = tiny_ner_model().set_inference_precision("bf16").train()
    seen = record_dtypes(model)
    x = tiny_inputs(batch=2, tokens=8, objects=2)
    labels = torch.zeros(2, int(x["word_ids"].max()) + 1, dtype=torch.long)
    labels[1, int(x["word_ids"][1].max()) + 1 :] = -100
    model(**x, labels=labels).loss.backward()
    assert seen["backbone"] == seen["text"] == seen["fusion"] == [torch.float32]


def test_int8_quantises_only_the_encoders_linear_layers() -> None:
    reference = tiny_ner_model()
    model = copy.deepcopy(reference).set_inference_precision("int8")
    before = dict(reference.named_modules())
    after = dict(model.named_modules())
    changed = {name for name, module in before.items() if type(after[name]) is not type(module)}
    assert set(after) - set(before) == {f"{name}._packed_params" for name in changed}  # the int8 weights
    linear = {name for name, module in before.items() if type(module) is nn.Linear}
    assert changed == {name for name in linear if name.startswith("umgf.")}
    assert changed and "classifier" not in changed
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    assert all(isinstance(after[name], dynamic) for name in changed)
    # everything else (embeddings, convolutions, LayerNorm, classifier, CRF) keeps its float32 weights exactly
    kept = reference.state_dict()
    for name, value in model.state_dict().items():
        if name in kept and isinstance(value, torch.Tensor) and value.dtype == torch.float32:
            assert torch.equal(value, kept[name]), name
    assert isinstance(model.crf, CRF) and model.crf.transitions.dtype == torch.float32
    x = tiny_inputs(batch=3, tokens=10, objects=3)
    with torch.inference_mode():
        expected, out = reference(**x), model(**x)
    scale = expected.logits.abs().max()
    torch.testing.assert_close(out.logits, expected.logits, rtol=0, atol=0.05 * float(scale))
    assert not torch.equal(out.logits, expected.logits)
    cached = {**{k: v for k, v in x.items() if k != "pixel_values"}, "object_features": torch.randn(3, 3, 96)}
    with torch.inference_mode():  # cached object features feed the quantised visual MLP as float32
        torch.testing.assert_close(model(**cached).logits, reference(**cached).logits, rtol=0, atol=0.05 * float(scale))
    assert quantize_linear_int8(nn.Sequential(nn.Conv2d(3, 3, 1))) == 0


def test_int8_is_for_good_and_not_for_training() -> None:
    model = tiny_ner_model().set_inference_precision("int8")
    assert model.set_inference_precision("int8").inference_precision == "int8"  # again: no second quantisation
    with pytest.raises(ValueError, match="quantised to int8: load it anew for 'fp32'"):
        model.set_inference_precision("fp32")
    with pytest.raises(ValueError, match="cannot be trained"):
        model.train()(**tiny_inputs(batch=1, tokens=6, objects=1))


def test_inference_copy_leaves_the_trained_model_alone(monkeypatch) -> None:
    set_cpu_flags(monkeypatch, False, False)
    model = UMGFForTokenClassification(tiny_config()).train()
    assert inference_copy(model, "fp32") is model and inference_copy(model, "auto") is model
    copied = inference_copy(model, "int8")
    assert copied is not model and copied.inference_precision == "int8" and not copied.training
    assert model.inference_precision == "fp32" and model.training
    assert type(model.umgf.layers[0].text.ffn.fc1) is nn.Linear


class AutocastRecorder(GridGrounder):
    """A grid grounder that records whether bfloat16 autocast is on while it grounds (as the detector's is)."""

    def __init__(self) -> None:
        super().__init__()
        self.autocast: list[bool] = []

    def ground(self, images, sentences, sample_ids):
        self.autocast.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return super().ground(images, sentences, sample_ids)


def test_pipeline_precision_default_auto_per_call_and_over_the_grounder(monkeypatch) -> None:
    set_cpu_flags(monkeypatch, False, False)
    assert tiny_ner_pipeline().model.inference_precision == "fp32"  # auto on a CPU without bf16 units
    set_cpu_flags(monkeypatch, True, False)
    grounder = AutocastRecorder()
    auto = MultimodalNERPipeline(model=tiny_ner_model(), processor=tiny_processor("grid"), device=-1)
    assert auto.model.inference_precision == "bf16"
    auto(TWEET, image=quadrant_image(), grounder=grounder)  # auto: bf16 model, fp32 detector (its boxes move)
    pipe = MultimodalNERPipeline(model=tiny_ner_model(), processor=tiny_processor("grid"), device=-1, precision="bf16")
    bf16 = pipe(TWEET, image=quadrant_image(), grounder=grounder, return_words=True)  # by name: the detector too
    fp32_pipe = MultimodalNERPipeline(
        model=tiny_ner_model(), processor=tiny_processor("grid"), device=-1, precision="fp32"
    )
    assert fp32_pipe.model.inference_precision == "fp32"
    expected = fp32_pipe(TWEET, image=quadrant_image(), grounder=grounder, return_words=True)
    assert grounder.autocast == [False, True, False]
    assert [w["tag"] for w in bf16["words"]] == [w["tag"] for w in expected["words"]]
    pipe(TWEET, image=quadrant_image(), grounder=grounder, precision="int8")  # per call: quantised from then on
    assert pipe.model.inference_precision == "int8" and grounder.autocast[-1] is False


def test_cli_precision_reaches_the_model(tmp_path_factory) -> None:
    folder = saved_tiny_ner_folder(tmp_path_factory)
    args = build_parser().parse_args(["--model", str(folder), "--text", "x", "--precision", "int8"])
    assert args.precision == "int8"
    assert build_parser().parse_args(["--model", "m", "--text", "x"]).precision == "auto"
    assert set(PRECISIONS) == {"auto", "fp32", "bf16", "int8"}
    pipe = load_pipeline(str(folder), "cpu", precision=args.precision)
    assert pipe.model.inference_precision == "int8"


def test_handler_takes_the_precision_from_the_environment_and_the_request(tmp_path_factory, monkeypatch) -> None:
    folder = saved_tiny_ner_folder(tmp_path_factory)
    path = Path(__file__).parent.parent / "handler.py"
    spec = importlib.util.spec_from_file_location("umgf_endpoint_handler_precision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("UMGF_PRECISION", "bf16")
    handler = module.EndpointHandler(str(folder))
    assert handler.pipeline.model.inference_precision == "bf16"  # the remote code's own precision module
    handler({"inputs": TWEET, "parameters": {"precision": "int8"}})
    assert handler.pipeline.model.inference_precision == "int8"
    with pytest.raises(ValueError, match="unknown precision"):
        handler({"inputs": TWEET, "parameters": {"precision": "fp8"}})


def test_train_umgf_inference_precision_tests_a_quantised_copy_and_saves_the_float_model(tmp_path) -> None:
    """``--inference_precision int8``: the test predictions are the saved (float) model's once quantised, and the saved
    model itself stays float32."""
    import json

    import train_umgf
    from datasets_scripts.synthetic import SyntheticMNERConfig, build_synthetic_dataset
    from modeling_umgf.processing_umgf import UMGFProcessor

    sizes = ("32", "16", "16")
    argv = ["--output_dir", str(tmp_path), "--synthetic_sizes", *sizes, "--num_train_epochs", "1"]
    results = train_umgf.main([*argv, "--inference_precision", "int8"])
    assert results["inference_precision"] == "int8"
    saved = UMGFForTokenClassification.from_pretrained(tmp_path).eval()
    assert type(saved.umgf.layers[0].text.ffn.fc1) is nn.Linear
    processor = UMGFProcessor.from_pretrained(tmp_path)
    test = build_synthetic_dataset(SyntheticMNERConfig(train_size=32, validation_size=16, test_size=16))["test"]
    processed = processor.process_examples(test[:])
    examples = [{key: values[i] for key, values in processed.items()} for i in range(len(test))]
    batch = processor.data_collator(return_metadata=True)(examples)
    inputs = train_umgf.model_inputs(batch, processor, use_objects=True)
    quantised = saved.set_inference_precision("int8")
    with torch.no_grad():
        predicted = processor.decode_word_predictions(quantised(**inputs).predictions, batch["num_words"])
    records = [json.loads(line) for line in (tmp_path / "predictions_test.jsonl").read_text().splitlines()]
    assert predicted == [record["pred"] for record in records]
