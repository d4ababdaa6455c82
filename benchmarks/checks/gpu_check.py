"""The GPU checks in one process: what must hold on CUDA, and the speed table there.

    python benchmarks/checks/gpu_check.py [--device cuda] [--output results.json] [--quick]

Run by ``benchmarks/checks/gpu_check.sh`` on a bare GPU machine (see there); ``--device cpu`` is a dry run of the same
code on the CPU. Checks, each a line of the report and an entry of the JSON:

1. the model and the CRF on the device equal them on the CPU (logits, loss, Viterbi, marginals, gradients), for the
   paper preset (packed text, crops through the backbone) and the release preset (sub-token CRF);
2. host-device syncs of a training step, counted by CUDA itself (``torch.cuda.set_sync_debug_mode``): at most 3;
3. bfloat16 and float16 autocast training steps of the synthetic job's model (finite loss, the loss falls), and a
   model loaded in bfloat16 fed float32 crops;
4. the multimodal-ner pipeline on the device tags as on the CPU;
5. the inference precision switch (``set_inference_precision``, the pipeline's ``precision``): what "auto" resolves
   to on the device, bf16 against fp32 on the same weights (same tags, float32 emissions and CRF), int8 refused
   off the CPU;
6. the speed table: inference and training step times at paper shapes (bert-base, ResNet-152, batch 16, 4 crops),
   float32 and bfloat16 autocast, and inference at ``set_inference_precision("auto")``.

The last line says how many checks passed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for benchmarks.*

from benchmarks.bench_common import build_model, make_batch, median_time, sample_batches, twitter_tweets
from modeling_umgf import CRF, UMGFConfig, UMGFForTokenClassification
from modeling_umgf.tools.tiny_models import ragged_batch, tiny_config, tiny_ner_model, tiny_processor

TWEET = "Photo of Helmut Kohl at the Brandenburg Gate #Berlin rocks!"


def colour_image() -> Image.Image:
    """A 120 x 90 picture of random colours (fixed seed)."""
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))


def to(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def close(a: torch.Tensor, b: torch.Tensor, tolerance: float) -> float:
    difference = float((a.detach().float().cpu() - b.detach().float().cpu()).abs().max()) if a.numel() else 0.0
    if difference > tolerance:
        raise AssertionError(f"differs by {difference:.3g} > {tolerance}")
    return difference


def check_model_equals_cpu(device: str, preset: str) -> dict[str, Any]:
    overrides = UMGFConfig.from_preset(preset).to_diff_dict() if preset != "paper" else {}
    keep = {
        k: v for k, v in overrides.items() if k not in ("vision_backbone", "intermediate_size", "num_fusion_layers")
    }
    no_dropout = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "classifier_dropout": 0.0}
    torch.manual_seed(0)
    cpu_model = UMGFForTokenClassification(tiny_config(**{**keep, **no_dropout})).train()  # batch norm trains
    model = UMGFForTokenClassification(tiny_config(**{**keep, **no_dropout}))
    model.load_state_dict(cpu_model.state_dict())
    model = model.to(device).train()
    for module in (cpu_model, model):  # BERT's dropout off too; batch norm still in training mode
        for sub in module.modules():
            if isinstance(sub, torch.nn.Dropout):
                sub.p = 0.0
    batch = ragged_batch()
    out_cpu, out = cpu_model(**batch), model(**to(batch, device))
    out_cpu.loss.backward()
    out.loss.backward()
    report = {"loss": close(out.loss, out_cpu.loss, 1e-3), "logits": close(out.logits, out_cpu.logits, 1e-3)}
    report["gradients"] = max(
        close(p.grad, q.grad, 5e-3) for p, q in zip(model.parameters(), cpu_model.parameters()) if q.grad is not None
    )
    cpu_model.eval()
    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        a, b = cpu_model(**inputs), model(**to(inputs, device))
    if not torch.equal(a.predictions, b.predictions.cpu()):
        raise AssertionError("Viterbi paths differ")
    report["marginals"] = close(model.tag_probabilities(b), cpu_model.tag_probabilities(a), 1e-4)
    return report


def check_crf(device: str) -> dict[str, Any]:
    torch.manual_seed(0)
    crf = CRF(13)
    for parameter in crf.parameters():
        torch.nn.init.uniform_(parameter, -2, 2)
    emissions = torch.randn(32, 40, 13) * 3
    mask = torch.arange(40) < torch.randint(1, 41, (32,))[:, None]
    on_device = CRF(13).to(device)
    on_device.load_state_dict(crf.state_dict())
    e, m = emissions.to(device), mask.to(device)
    if not torch.equal(crf.decode(emissions, mask), on_device.decode(e, m).cpu()):
        raise AssertionError("Viterbi differs")
    return {
        "log_partition": close(on_device.log_partition(e, m), crf.log_partition(emissions, mask), 1e-3),
        "marginals": close(on_device.marginals(e, m), crf.marginals(emissions, mask), 1e-4),
    }


def check_syncs(device: str) -> dict[str, Any]:
    if not device.startswith("cuda"):
        return {"skipped": "CUDA's sync debug mode needs a GPU (tests/test_gpu_readiness.py counts them on CPU)"}
    torch.manual_seed(0)
    model = UMGFForTokenClassification(tiny_config()).to(device).train()
    batch = to(ragged_batch(), device)
    model(**batch).loss.backward()  # warm-up: lazy initialisation may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model(**batch).loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
    if len(syncs) > 3:
        raise AssertionError(f"{len(syncs)} syncs per training step: {syncs}")
    return {"syncs_per_training_step": len(syncs), "where": syncs}


def check_mixed_precision(device: str) -> dict[str, Any]:
    device_type = torch.device(device).type
    report: dict[str, Any] = {}
    dtypes = [torch.bfloat16] + ([torch.float16] if device_type == "cuda" else [])
    for dtype in dtypes:
        torch.manual_seed(0)
        model = UMGFForTokenClassification(tiny_config()).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        scaler = torch.amp.GradScaler(device_type, enabled=dtype == torch.float16)
        batch = to(ragged_batch(), device)
        losses = []
        for _ in range(15):
            with torch.autocast(device_type, dtype=dtype):
                loss = model(**batch).loss
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            losses.append(float(loss))
        if not all(torch.isfinite(torch.tensor(losses))) or losses[-1] >= losses[0]:
            raise AssertionError(f"{dtype}: losses {losses[0]:.3f} -> {losses[-1]:.3f}")
        report[str(dtype)] = {"first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4)}
    half = UMGFForTokenClassification(tiny_config()).to(device, torch.bfloat16).eval()
    with torch.no_grad():
        out = half(**to({k: v for k, v in ragged_batch().items() if k != "labels"}, device))  # float32 crops
    if not torch.isfinite(out.logits.float()).all():
        raise AssertionError("a bfloat16 model gave non-finite logits")
    report["bfloat16_model_float32_inputs"] = "ok"
    return report


def check_pipeline(device: str) -> dict[str, Any]:
    from transformers import pipeline

    from modeling_umgf.tools.tiny_models import tiny_ner_pipeline

    with tempfile.TemporaryDirectory() as folder:
        tiny_ner_pipeline().save_pretrained(folder)
        on_cpu = pipeline(model=folder, trust_remote_code=True, device="cpu")
        on_device = pipeline(model=folder, trust_remote_code=True, device=device)
        inputs = [TWEET, {"text": TWEET, "image": colour_image()}, "Kawhi Leonard wins"]
        a, b = on_cpu(inputs, batch_size=3), on_device(inputs, batch_size=3)
    if [[(e["entity_group"], e["start"], e["end"]) for e in r] for r in a] != [
        [(e["entity_group"], e["start"], e["end"]) for e in r] for r in b
    ]:
        raise AssertionError("entities differ")
    scores = max((abs(x["score"] - y["score"]) for r, s in zip(a, b) for x, y in zip(r, s)), default=0.0)
    if scores > 1e-3:
        raise AssertionError(f"scores differ by {scores}")
    return {"entities": sum(len(r) for r in b), "max_score_difference": scores}


def check_inference_precision(device: str) -> dict[str, Any]:
    import copy

    from modeling_umgf.pipeline_umgf import MultimodalNERPipeline
    from modeling_umgf.precision import resolve_precision

    report: dict[str, Any] = {"auto": resolve_precision("auto", device)}
    reference = tiny_ner_model().to(device)
    model = copy.deepcopy(reference).set_inference_precision("bf16")
    batch = to({k: v for k, v in ragged_batch().items() if k != "labels"}, device)
    with torch.inference_mode():
        expected, out = reference(**batch), model(**batch)
    if out.logits.dtype != torch.float32 or model.crf.transitions.dtype != torch.float32:
        raise AssertionError(f"bf16: emissions {out.logits.dtype}, CRF {model.crf.transitions.dtype}")
    if not torch.equal(out.predictions, expected.predictions):
        raise AssertionError("bf16 tags differ from fp32 on the same weights")
    report["bf16_max_emission_difference"] = close(out.logits, expected.logits, 0.1)
    if torch.device(device).type != "cpu":
        try:
            copy.deepcopy(reference).set_inference_precision("int8")
        except ValueError:
            report["int8_off_the_cpu"] = "refused"
        else:
            raise AssertionError("int8 accepted off the CPU")
    tags = {}
    for precision in ("fp32", "bf16"):
        pipe = MultimodalNERPipeline(
            model=tiny_ner_model(), processor=tiny_processor("grid"), device=device, precision=precision
        )
        tags[precision] = [w["tag"] for w in pipe(TWEET, image=colour_image(), return_words=True)["words"]]
    if tags["bf16"] != tags["fp32"]:
        raise AssertionError(f"pipeline tags differ: {tags}")
    report["pipeline_words"] = len(tags["fp32"])
    return report


def speed_table(device: str, quick: bool) -> dict[str, Any]:
    device_type = torch.device(device).type
    pool, _ = twitter_tweets()
    rows: dict[str, Any] = {}
    model = build_model("paper").to(device)
    model.umgf.vision_backbone.to(memory_format=torch.channels_last)
    repeats = 2 if quick else 5
    batches = [to(make_batch(t, objects=4), device) for t in sample_batches(pool, 16, repeats + 1)]

    synchronize = torch.cuda.synchronize if device_type == "cuda" else None

    def timed(fn: Callable[[], None]) -> float:
        """Median seconds of ``fn`` after one warm-up call, device work included."""
        return median_time(fn, repeats, synchronize=synchronize)[0]

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for precision in ("float32", "bfloat16"):
        autocast = (
            torch.autocast(device_type, dtype=torch.bfloat16) if precision == "bfloat16" else contextlib.nullcontext()
        )

        def infer(autocast=autocast) -> None:
            model.eval()
            with torch.inference_mode(), autocast:
                model(**{k: v for k, v in batches[0].items() if k != "labels"})

        def train(autocast=autocast) -> None:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = model(**batches[0]).loss
            loss.backward()
            optimizer.step()

        infer_seconds, train_seconds = timed(infer), timed(train)
        rows[precision] = {
            "inference_seconds_per_batch_of_16": round(infer_seconds, 4),
            "tweets_per_second": round(16 / infer_seconds, 1),
            "training_step_seconds": round(train_seconds, 4),
        }
    resolved = model.set_inference_precision("auto").inference_precision

    def infer_auto() -> None:
        model.eval()
        with torch.inference_mode():
            model(**{k: v for k, v in batches[0].items() if k != "labels"})

    seconds = timed(infer_auto)
    rows[f"set_inference_precision('auto') = {resolved}"] = {
        "inference_seconds_per_batch_of_16": round(seconds, 4),
        "tweets_per_second": round(16 / seconds, 1),
    }
    if device_type == "cuda":
        rows["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        rows["gpu"] = torch.cuda.get_device_name()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--quick", action="store_true", help="fewer timing repeats")
    parser.add_argument("--skip-speed", action="store_true", help="no speed table (minutes at paper shapes on a CPU)")
    args = parser.parse_args()
    checks: list[tuple[str, Callable[[], Any]]] = [
        ("model (paper) equals CPU", lambda: check_model_equals_cpu(args.device, "paper")),
        ("model (release) equals CPU", lambda: check_model_equals_cpu(args.device, "release")),
        ("CRF equals CPU", lambda: check_crf(args.device)),
        ("syncs per training step", lambda: check_syncs(args.device)),
        ("mixed precision", lambda: check_mixed_precision(args.device)),
        ("pipeline", lambda: check_pipeline(args.device)),
        ("inference precision", lambda: check_inference_precision(args.device)),
    ]
    if not args.skip_speed:
        checks.append(("speed table", lambda: speed_table(args.device, args.quick)))
    report: dict[str, Any] = {"device": args.device, "torch": torch.__version__}
    passed = 0
    for name, check in checks:
        started = time.perf_counter()
        try:
            result = check()
            passed += 1
            print(f"PASS {name} ({time.perf_counter() - started:.1f} s): {json.dumps(result)}", flush=True)
            report[name] = {"passed": True, **result}
        except Exception as error:  # one failed check must not hide the others
            print(f"FAIL {name}: {error}\n{traceback.format_exc()}", flush=True)
            report[name] = {"passed": False, "error": str(error)}
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))
    print(f"gpu_check on {args.device}: {passed} of {len(checks)} checks passed")
    sys.exit(0 if passed == len(checks) else 1)


if __name__ == "__main__":
    main()
