"""How the fusion layers scale with tokens (T), objects per tweet (O) and batch (B): a table and a PNG.

Measures the paper's L=2 fusion layers (d=512, 8 heads) on random node states, in training (forward +
backward) and inference, and separately the inter-modal gated fusion (eq 3-6), whose cost is the one that
grows with the number of (token, object) edges. Memory is the activation memory kept for the backward
pass, counted exactly with ``torch.autograd.graph.saved_tensors_hooks`` (bytes of every saved tensor,
each storage counted once), so it does not depend on the allocator or on the other processes sharing the
machine. Time is the median over repeats with torch threads fixed to 2, as wall time and as process CPU
time (user + system of both threads); the fits use CPU time, which other processes on a shared machine
disturb much less than wall time.

The expectation checked: the gate's time and memory are linear in B*T*O (no [B, T, O, 2d] tensor; one
[B, T, O, d] gate), and the layers' cost is linear in O at fixed T (self-attention among the T tokens adds
a B*T^2 term, the paper's complete intra-modal graph).

Output: ``benchmarks/results/scaling.json``, ``benchmarks/results/scaling.png`` and a one-line summary.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository; bench_common before torch (OpenMP)
from benchmarks.bench_common import RESULTS_DIR, machine, median_time, save_results, set_threads

# isort: split

import torch

from modeling_umgf import UMGFConfig
from modeling_umgf.modeling_umgf import UMGFCrossModalGate, UMGFFusionLayer

GRID = {
    "tokens": [dict(B=16, T=t, O=4) for t in (16, 32, 64, 128, 256)],
    "objects": [dict(B=16, T=32, O=o) for o in (1, 4, 16, 64)],
    "batch": [dict(B=b, T=32, O=4) for b in (1, 4, 16, 64)],
}


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for the backward pass while ``fn`` runs (each storage once)."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def inputs(shape: dict[str, int], d: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    h_x = torch.randn(shape["B"], shape["T"], d, generator=g, requires_grad=True)
    h_o = torch.randn(shape["B"], shape["O"], d, generator=g, requires_grad=True)
    text_mask = torch.ones(shape["B"], shape["T"], dtype=torch.bool)
    object_mask = torch.ones(shape["B"], shape["O"], dtype=torch.bool)
    adjacency = torch.ones(shape["B"], shape["T"], shape["O"])
    return h_x, h_o, text_mask, object_mask, adjacency


def measure(shape: dict[str, int], layers: torch.nn.ModuleList, gate: UMGFCrossModalGate, repeats: int) -> dict:
    d = gate.w_self.in_features
    h_x, h_o, text_mask, object_mask, adjacency = inputs(shape, d)

    def layers_forward():
        x, o = h_x, h_o
        for layer in layers:
            x, o, _ = layer(x, text_mask, o, object_mask, adjacency)
        return x.sum() + o.sum()

    def layers_train():
        h_x.grad = h_o.grad = None
        layers.zero_grad(set_to_none=True)
        layers_forward().backward()

    def layers_infer():
        with torch.inference_mode():
            layers_forward()

    def gate_train():
        h_x.grad = h_o.grad = None
        r, _ = gate(h_x, h_o, adjacency)
        r.sum().backward()

    layers.train()
    gate.train()
    row = dict(shape, edges=shape["B"] * shape["T"] * shape["O"])
    for name, fn in (("layers_train", layers_train), ("gate_train", gate_train)):
        _, wall, cpu, _ = median_time(fn, repeats)
        row[f"{name}_ms"], row[f"{name}_cpu_ms"] = 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)
    row["layers_saved_mib"] = saved_bytes(layers_forward) / 2**20
    row["gate_saved_mib"] = saved_bytes(lambda: gate(h_x, h_o, adjacency)) / 2**20
    layers.eval()
    _, wall, cpu, _ = median_time(layers_infer, repeats)
    row["layers_infer_ms"], row["layers_infer_cpu_ms"] = 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def linear_fit(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """Least-squares y = a + b x and its R^2."""
    xt, yt = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    design = torch.stack([torch.ones_like(xt), xt], 1)
    coef = torch.linalg.lstsq(design, yt.unsqueeze(1)).solution.squeeze(1)
    residual = yt - design @ coef
    r2 = 1 - float((residual**2).sum() / ((yt - yt.mean()) ** 2).sum())
    return float(coef[0]), float(coef[1]), r2


def plot(rows: dict[str, list[dict]], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    gate_panels = (
        ("gate_train_cpu_ms", "CPU ms (fwd+bwd)", "time"),
        ("gate_saved_mib", "MiB saved for backward", "activation memory"),
    )
    for axis, (measure, ylabel, what) in zip(axes, gate_panels):
        for axis_name, marker in zip(GRID, "os^"):
            series = rows[axis_name]
            axis.plot(
                [r["edges"] for r in series],
                [r[measure] for r in series],
                marker=marker,
                label=f"gate, vary {axis_name}",
            )
        axis.set(xscale="log", yscale="log", xlabel="token-object edges B*T*O", ylabel=ylabel)
        axis.set_title(f"Inter-modal gate (eq 3-6): {what}")
    for name, key in (("tokens", "T"), ("objects", "O"), ("batch", "B")):
        series = rows[name]
        axes[2].plot(
            [r[key] for r in series],
            [r["layers_train_cpu_ms"] for r in series],
            marker="o",
            label=f"vary {key} (others: B=16, T=32, O=4)",
        )
    axes[2].set(xscale="log", yscale="log", xlabel="T, O or B", ylabel="CPU ms (fwd+bwd)")
    axes[2].set_title("L=2 fusion layers, d=512: time")
    for axis in axes:
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    set_threads()
    torch.manual_seed(0)
    config = UMGFConfig()
    layers = torch.nn.ModuleList([UMGFFusionLayer(config) for _ in range(config.num_fusion_layers)])
    gate = UMGFCrossModalGate(config)
    rows = {axis: [] for axis in GRID}
    for axis, shapes in GRID.items():
        for shape in shapes:
            rows[axis].append(measure(shape, layers, gate, args.repeats))
            r = rows[axis][-1]
            print(
                f"{axis:8s} B={r['B']:3d} T={r['T']:4d} O={r['O']:3d} edges={r['edges']:7d} "
                f"layers {r['layers_train_cpu_ms']:9.1f} cpu-ms train {r['layers_infer_cpu_ms']:8.1f} cpu-ms infer "
                f"{r['layers_saved_mib']:8.1f} MiB | gate {r['gate_train_cpu_ms']:8.1f} cpu-ms "
                f"{r['gate_saved_mib']:8.1f} MiB "
                f"(wall {r['layers_train_ms']:.0f} / {r['gate_train_ms']:.0f} ms)",
                flush=True,
            )
    every = [r for series in rows.values() for r in series]
    fits = {
        "gate_time_vs_edges": linear_fit([r["edges"] for r in every], [r["gate_train_cpu_ms"] for r in every]),
        "gate_memory_vs_edges": linear_fit([r["edges"] for r in every], [r["gate_saved_mib"] for r in every]),
        "layers_time_vs_objects": linear_fit(
            [r["O"] for r in rows["objects"]], [r["layers_train_cpu_ms"] for r in rows["objects"]]
        ),
        "layers_memory_vs_objects": linear_fit(
            [r["O"] for r in rows["objects"]], [r["layers_saved_mib"] for r in rows["objects"]]
        ),
    }
    fits = {k: {"intercept": round(a, 4), "slope": b, "r2": round(r2, 4)} for k, (a, b, r2) in fits.items()}
    png = RESULTS_DIR / "scaling.png"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    plot(rows, png)
    path = save_results("scaling", {"machine": machine(), "rows": rows, "linear_fits": fits})
    print(
        f"SUMMARY bench_scaling: gate time ~ B*T*O with R^2={fits['gate_time_vs_edges']['r2']}, gate memory "
        f"R^2={fits['gate_memory_vs_edges']['r2']}, layers time vs O R^2={fits['layers_time_vs_objects']['r2']} "
        f"-> {path}, {png}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
