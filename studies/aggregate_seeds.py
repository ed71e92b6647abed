"""Several demo runs (one per meta-training seed) as one table and plot: OUT/seeds.json (kept: studies/results/seeds.json, async_seeds.png).

    for s in 0 1 2; do surf-dist demo --seed $s --out runs/demo_seed$s; done
    python studies/aggregate_seeds.py runs/demo_seed0 runs/demo_seed1 runs/demo_seed2 --out runs/seeds

Reports, for SURF (constrained) and plain unrolling, over seeds: final local accuracy, the
permuted-label result, layer-to-layer rises of the mean test loss, and the asynchronous sweep
(mean over seeds of each seed's mean over draws, with the spread across seeds).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MODELS = ("surf", "unrolled")


def load(paths):
    return [json.loads((Path(p) / "summary.json").read_text()) for p in paths]


def aggregate(summaries) -> dict:
    levels = summaries[0]["async"]["n_async"]
    out = {"seeds": [s["config"]["train"]["seed"] for s in summaries], "n_async": levels}
    for name in MODELS:
        losses = np.array([s["methods"][name]["loss"] for s in summaries])
        sweep = np.array([[np.mean(v) for v in s["async"][name]] for s in summaries])   # (seeds, levels)
        out[name] = {
            "final_local_accuracy": [s["methods"][name]["local_accuracy"][-1] for s in summaries],
            "permuted_labels": [s["permuted_labels"][name] for s in summaries],
            "loss_rises": [int((np.diff(l) > 0).sum()) for l in losses],
            "mean_loss_per_layer": losses.mean(0).tolist(),
            "async_mean": sweep.mean(0).tolist(), "async_std_over_seeds": sweep.std(0).tolist(),
            "async_drop_at_max": (sweep[:, 0] - sweep[:, -1]).tolist(),
        }
    return out


def plot(result: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style in zip(MODELS, ("o-", "s--")):
        mean, std = np.array(result[name]["async_mean"]), np.array(result[name]["async_std_over_seeds"])
        ax.plot(result["n_async"], mean, style, label=f"{name} (mean of {len(result['seeds'])} seeds)")
        ax.fill_between(result["n_async"], mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("asynchronous agents per layer (n_async)")
    ax.set_ylabel("final local accuracy")
    ax.set_title("Robustness to asynchronous agents, over meta-training seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="demo output folders")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result = aggregate(load(args.runs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "async_seeds.png")
    print(f"seeds {result['seeds']}, n_async {result['n_async']}")
    for name in MODELS:
        r = result[name]
        print(f"{name:<9} final local acc {np.mean(r['final_local_accuracy']):.3f} "
              f"(seeds {np.round(r['final_local_accuracy'], 3).tolist()}), permuted "
              f"{np.mean(r['permuted_labels']):.3f}, loss rises per seed {r['loss_rises']}")
        print(f"{'':<9} async mean " + " ".join(f"{m:.3f}±{s:.3f}" for m, s in
                                                zip(r["async_mean"], r["async_std_over_seeds"])))


if __name__ == "__main__":
    main()
