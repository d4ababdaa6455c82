"""ResNet-152 inference on object crops: which CPU execution paths are faster, and by how much.

The backbone is 93 % of UMGF's inference time (``profile_components.py``), so this compares ways of running
the same network on a batch of 224x224 crops: eager NCHW, eager channels-last (what the model does), BatchNorm
folded into the convolutions (``torch.fx`` fuse), TorchInductor with frozen weights (what
``optimize_for_inference`` does), and two int8 paths: PyTorch 2 export quantisation for x86
(``torchao``, ``X86InductorQuantizer``) and OpenVINO with NNCF post-training quantisation (``openvino``),
plus OpenVINO fp32. A path whose library is not installed is reported as skipped. Each runs in a fresh
process; the time is the best of 5 after one warm-up call, and ``max_abs_diff`` is against eager NCHW.

Usage: ``python benchmarks/speed/bench_backbone.py [--crops 16] [--only NAME ...]``; results go to
``benchmarks/results/backbone.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository; bench_common before torch (OpenMP)
from benchmarks.bench_common import RESULTS_DIR, gemm_gflops, machine, run_isolated, save_results, set_threads, timed

# isort: split

import torch

REPEATS = 5
#: variant -> the optional module it needs (None: torch alone).
VARIANTS: dict[str, str | None] = {
    "eager-nchw": None,
    "eager-channels-last": None,
    "bn-folded": None,
    "inductor-frozen": None,
    "int8-pt2e-inductor": "torchao",
    "openvino-fp32": "openvino",
    "int8-openvino-nncf": "nncf",
}


def build(variant: str, model: torch.nn.Module, example: torch.Tensor) -> tuple[Callable, torch.Tensor]:
    """A callable running ``model`` the ``variant`` way, and the input layout it takes."""
    channels_last = example.contiguous(memory_format=torch.channels_last)
    if variant == "eager-nchw":
        return model, example
    if variant == "eager-channels-last":
        return model.to(memory_format=torch.channels_last), channels_last
    if variant == "bn-folded":
        from torch.fx.experimental.optimization import fuse

        return fuse(model.to(memory_format=torch.channels_last)), channels_last
    if variant == "inductor-frozen":
        model.to(memory_format=torch.channels_last).compile(options={"freezing": True})
        return model, channels_last
    if variant == "int8-pt2e-inductor":
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(torch.export.export(model, (channels_last,)).module(), quantizer)
        for seed in range(2):  # calibration on random crops (the timing does not depend on the values)
            prepared(
                torch.randn(example.shape, generator=torch.Generator().manual_seed(seed)).contiguous(
                    memory_format=torch.channels_last
                )
            )
        from torch._inductor import config as inductor_config

        inductor_config.freezing = True  # the per-call option leaves the int8 weight prepacking untraceable
        return torch.compile(convert_pt2e(prepared)), channels_last
    if variant in ("openvino-fp32", "int8-openvino-nncf"):
        import openvino

        converted = openvino.convert_model(model, example_input=example)
        if variant == "int8-openvino-nncf":
            import nncf

            calibration = [torch.randn(example.shape, generator=torch.Generator().manual_seed(s)) for s in range(2)]
            converted = nncf.quantize(
                converted, nncf.Dataset(calibration, lambda t: t.numpy()), subset_size=len(calibration)
            )
        compiled = openvino.Core().compile_model(
            converted, "CPU", {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "f32"}
        )
        request = compiled.create_infer_request()

        def run(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(next(iter(request.infer({0: x.numpy()}).values())).copy())

        return run, example
    raise ValueError(f"unknown variant {variant!r}")


def measure(variant: str, crops: int) -> dict[str, Any]:
    set_threads(2)
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet152", pretrained=False, num_classes=0).eval()
    example = torch.randn(crops, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # not inference_mode: PT2E's quantised convolutions cannot be traced under it
        reference = model(example)
    gflops = gemm_gflops()
    with torch.no_grad():
        (fn, x), build_seconds, _ = timed(lambda: build(variant, model, example))
        out, warmup_seconds, _ = timed(lambda: fn(x))  # warm-up (and compilation, for compiled paths)
        prepare = build_seconds + warmup_seconds
        times = []
        for _ in range(REPEATS):
            out, seconds, _ = timed(lambda: fn(x))
            times.append(seconds)
    best = min(times)
    return {
        "variant": variant,
        "crops": crops,
        "seconds": round(best, 3),
        "seconds_per_64_crops": round(best * 64 / crops, 2),
        "prepare_seconds": round(prepare, 1),
        "max_abs_diff": float((out.float() - reference).abs().max()),
        "relative_error": float((out.float() - reference).norm() / reference.norm()),
        "gemm_gflops": gflops,
        "machine": machine(),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=int, default=16)
    parser.add_argument("--only", nargs="*", choices=sorted(VARIANTS))
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # one measurement in this process
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(measure(args.variant, args.crops)), flush=True)
        return
    path = RESULTS_DIR / "backbone.json"
    rows = json.loads(path.read_text())["results"] if path.exists() else {}  # keep rows not measured again
    for variant in args.only or list(VARIANTS):
        needs = VARIANTS[variant]
        if needs is not None and importlib.util.find_spec(needs) is None:
            rows[variant] = {"skipped": f"{needs} is not installed"}
        else:
            try:
                rows[variant] = run_isolated(
                    Path(__file__), ["--variant", variant, "--crops", str(args.crops)], timeout=1800
                )
            except Exception as error:  # one failing path must not lose the others
                rows[variant] = {"error": str(error)[-1500:]}
        row = rows[variant]
        print(
            f"{variant:22s} {row.get('seconds', '-'):>8} s / {args.crops} crops  "
            f"{row.get('seconds_per_64_crops', '-'):>7} s / 64  "
            f"prepare {row.get('prepare_seconds', '-'):>6} s  max|diff| {row.get('max_abs_diff', '-')}  "
            f"{row.get('skipped', row.get('error', ''))[:200]}",
            flush=True,
        )
    save_results("backbone", {"crops": args.crops, "results": rows})
    base = rows.get("eager-channels-last", {}).get("seconds")  # (all rows at --crops; rerun all to change it)
    timed = [(r["seconds"], v) for v, r in rows.items() if "seconds" in r]
    if not timed:
        print(f"SUMMARY bench_backbone: no variant measured -> {path}")
        return
    best = min(timed)
    speedup = f"{base / best[0]:.2f}x eager channels-last" if base else "no channels-last baseline"
    print(f"SUMMARY bench_backbone: fastest {best[1]} {best[0]} s / {args.crops} crops ({speedup}) -> {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
