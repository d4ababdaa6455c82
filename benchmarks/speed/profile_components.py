"""Where the time goes in UMGF: share of each component, for the default (paper) configuration on CPU.

Components: text encoder (BERT), vision backbone (ResNet-152 on the crops), text and visual MLPs, each
fusion layer, classifier, CRF (Viterbi at inference, log-likelihood in training), and the rest (input
checks, gathers). Module times come from forward pre/post hooks, the CRF's from wrapping its methods.
Shares are of process CPU time (both threads), which other processes on a shared machine disturb much
less than wall time; wall seconds are reported too.

Scenarios (batch 16, 4 crops or 4 cached features per tweet, real Twitter-2017 lengths, 2 threads):

- ``infer``: inference of the optimised path (inference_mode, dynamic padding, channels_last backbone;
  ``--infer-batch-size`` 4 by default: 16 crops are enough for the shares);
- ``train-cached``: a training step with the frozen backbone's features cached: forward shares, then the
  backward pass and the Adam step as two more rows;
- ``train-finetune``: the same with the backbone fine-tuned on the crops (``--finetune-batch-size`` 2 by default
  here: it is the slowest scenario; shares do not depend on the batch size much).

Prints a table per scenario and a one-line summary; saves ``benchmarks/results/profile.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository; bench_common before torch (OpenMP)
from benchmarks.bench_common import (
    StageTimer,
    build_model,
    machine,
    make_batch,
    sample_batches,
    save_results,
    set_threads,
    timed,
    twitter_tweets,
)

# isort: split

import torch


def component_timer(model) -> StageTimer:
    """A stage timer on each component of ``model``: encoders, MLPs, fusion layers, classifier and the CRF."""
    timer = StageTimer()
    umgf = model.umgf
    modules = {"text encoder (BERT)": umgf.text_encoder, "text MLP": umgf.text_mlp, "classifier": model.classifier}
    if umgf.config.use_visual:
        modules["vision backbone (ResNet)"] = umgf.vision_backbone
        modules["visual MLP"] = umgf.visual_mlp
    for i, layer in enumerate(umgf.layers):
        modules[f"fusion layer {i + 1}"] = layer
    for name, module in modules.items():
        timer.module(name, module)
    if model.crf is not None:
        for method in ("decode", "log_likelihood"):
            timer.function("CRF", model.crf, method)
    return timer


def profile(scenario: str, batch_size: int) -> dict:
    model = build_model("paper")
    timer = component_timer(model)
    features = scenario == "train-cached"
    if scenario != "train-cached":
        model.umgf.vision_backbone.to(memory_format=torch.channels_last)
    pool, _ = twitter_tweets()
    warm, batch = (
        make_batch(t, features=features, seed=i, labels=scenario != "infer")
        for i, t in enumerate(sample_batches(pool, batch_size, 2))
    )
    if scenario != "train-cached":
        for b in (warm, batch):
            pv = b["pixel_values"]
            b["pixel_values"] = pv.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(pv.shape)
    rows: dict[str, float] = {}
    if scenario == "infer":
        model.eval()
        with torch.inference_mode():
            model(**warm)
            timer.reset()
            _, total_wall, total = timed(lambda: model(**batch))
    else:
        model.train()
        if features:
            model.umgf.vision_backbone.requires_grad_(False)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step(inputs):
            optimizer.zero_grad(set_to_none=True)
            loss, _, forward = timed(lambda: model(**inputs).loss)
            _, _, backward = timed(loss.backward)
            _, _, adam = timed(optimizer.step)
            return forward, backward, adam

        step(warm)
        timer.reset()
        (forward, backward, adam), total_wall, _ = timed(lambda: step(batch))
        total = forward + backward + adam
        rows["backward pass (all components)"] = backward
        rows["Adam step"] = adam
    rows.update({name: cpu for name, (_, cpu) in timer.seconds.items()})
    rows["other (checks, gathers, position encoding)"] = total - sum(rows.values())
    return {
        "scenario": scenario,
        "batch_size": batch_size,
        "total_cpu_s": round(total, 3),
        "total_wall_s": round(total_wall, 3),
        "cpu_seconds": {k: round(v, 4) for k, v in rows.items()},
        "module_wall_seconds": {k: round(wall, 4) for k, (wall, _) in timer.seconds.items()},
        "share_percent": {k: round(100 * v / total, 2) for k, v in rows.items()},
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--scenarios",
        nargs="*",
        default=["infer", "train-cached", "train-finetune"],
        choices=["infer", "train-cached", "train-finetune"],
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--infer-batch-size", type=int, default=4)
    parser.add_argument("--finetune-batch-size", type=int, default=2)
    args = parser.parse_args(argv)
    set_threads()
    results = []
    for scenario in args.scenarios:
        size = {"train-finetune": args.finetune_batch_size, "infer": args.infer_batch_size}.get(
            scenario, args.batch_size
        )
        result = profile(scenario, size)
        results.append(result)
        print(f"\n{scenario} (batch {size}): {result['total_cpu_s']} CPU s, {result['total_wall_s']} s wall")
        for name, share in sorted(result["share_percent"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:45s} {result['cpu_seconds'][name]:9.3f} CPU s {share:6.1f} %")
    path = save_results("profile", {"machine": machine(), "results": results})
    top = {r["scenario"]: max(r["share_percent"].items(), key=lambda kv: kv[1]) for r in results}
    print("SUMMARY profile_components: " + "; ".join(f"{s}: {n} {p}%" for s, (n, p) in top.items()) + f" -> {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
