"""PNG figures from a results ``summary`` dict (the contents of ``summary.json``).

All functions use the non-interactive Agg backend and close their figures after
saving, so they are safe to call repeatedly from scripts or tests.
"""
from __future__ import annotations

import os
from pathlib import Path

# The plots are PNG files, drawn by Agg whatever the environment says: a user's MPLBACKEND
# (one that does not exist made `import matplotlib` raise, even for `surf-dist --help`) is not used.
os.environ.pop("MPLBACKEND", None)
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

LEARNED = ("surf", "unrolled")
LABELS = {
    "surf": "SURF (constrained)",
    "unrolled": "Unrolled (unconstrained)",
    "dgd": "DGD",
    "dsgd": "DSGD",
    "gradient_tracking": "Gradient tracking",
    "dfedavgm": "DFedAvgM",
}
COLORS = {
    "surf": "tab:red",
    "unrolled": "tab:purple",
    "dgd": "tab:blue",
    "dsgd": "tab:orange",
    "gradient_tracking": "tab:green",
    "dfedavgm": "tab:brown",
}
METRIC_LABELS = {
    "local_accuracy": "local accuracy (mean over agents)",
    "accuracy": "accuracy (averaged model)",
    "loss": "held-out loss",
}


def _label(name: str) -> str:
    """Human-readable legend label for a method name."""
    return LABELS.get(name, name)


def _style(name: str) -> dict:
    """Line style kwargs: learned optimizers get markers and thicker lines."""
    style = {"label": _label(name), "color": COLORS.get(name)}
    if name in LEARNED:
        style.update(linewidth=2.5, marker="o" if name == "surf" else "s",
                     markersize=5, zorder=3)
    else:
        style.update(linewidth=1.3, alpha=0.9, zorder=2)
    return style


def _positive(xs, ys):
    """Keep only (x, y) pairs with x > 0 (for log-scaled x axes)."""
    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and x > 0 and y is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _centralized_value(summary: dict, metric: str):
    """Centralized reference for ``metric`` (loss for loss, accuracy otherwise)."""
    central = summary.get("centralized") or {}
    return central.get("loss" if metric == "loss" else "accuracy")


def _save(fig, path) -> Path:
    """Save ``fig`` to ``path`` (creating parent dirs), close it, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_accuracy_vs_communication(summary: dict, path, metric: str = "local_accuracy") -> Path:
    """Plot ``metric`` vs cumulative rounds and vs bytes per agent (both log x).

    Round-0 and zero-byte points (the initial iterate) cannot sit on a log axis
    and are omitted; the axis labels say so.
    """
    fig, (ax_r, ax_b) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for name, res in summary.get("methods", {}).items():
        ys = res.get(metric)
        if not ys:
            continue
        style = _style(name)
        ax_r.plot(*_positive(res.get("rounds", []), ys), **style)
        ax_b.plot(*_positive(res.get("bytes_per_agent", []), ys), **style)
    central = _centralized_value(summary, metric)
    for ax in (ax_r, ax_b):
        if central is not None:
            ax.axhline(central, color="black", linestyle="--", linewidth=1.2,
                       label=f"centralized ({'loss' if metric == 'loss' else 'pooled accuracy'})", zorder=1)
        ax.set_xscale("log")
        ax.grid(True, which="major", alpha=0.3)
    ax_r.set_xlabel("cumulative communication rounds (log scale; round 0 omitted)")
    ax_b.set_xlabel("bytes sent per agent (log scale; 0 omitted)")
    ax_r.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax_r.set_title("vs communication rounds")
    ax_b.set_title("vs communication volume")
    handles, labels = ax_r.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4),
               bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.suptitle(f"{METRIC_LABELS.get(metric, metric).capitalize()} vs communication cost")
    return _save(fig, path)


def plot_layer_loss(summary: dict, path) -> Path | None:
    """Plot held-out loss per unrolled layer for SURF / unrolled; None if neither."""
    methods = summary.get("methods", {})
    present = [m for m in LEARNED if methods.get(m, {}).get("loss")]
    if not present:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    all_vals = []
    for name in present:
        losses = methods[name]["loss"]
        all_vals.extend(v for v in losses if v is not None)
        ax.plot(range(len(losses)), losses, **_style(name))
    if all_vals and min(all_vals) > 0:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer index (0 = initial point)")
    ax.set_ylabel("held-out loss" + (" (log scale)" if ax.get_yscale() == "log" else ""))
    ax.set_title("Held-out loss per unrolled layer")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best")
    return _save(fig, path)


def _mean_std(draws_per_level):
    """Mean and std over draws for each level (NaN for levels without draws)."""
    means, stds = [], []
    for draws in draws_per_level:
        vals = np.asarray([d for d in draws if d is not None], dtype=float)
        means.append(vals.mean() if vals.size else np.nan)
        stds.append(vals.std() if vals.size else np.nan)
    return np.asarray(means), np.asarray(stds)


def plot_async(summary: dict, path) -> Path | None:
    """Plot mean final local accuracy vs number of asynchronous agents (±1 std band)."""
    data = summary.get("async")
    if not data or not data.get("n_async"):
        return None
    levels = np.asarray(data["n_async"], dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name in LEARNED:
        if not data.get(name):
            continue
        mean, std = _mean_std(data[name])
        style = _style(name)
        ax.plot(levels, mean, **style)
        ax.fill_between(levels, mean - std, mean + std, color=style["color"], alpha=0.2)
    central = _centralized_value(summary, "accuracy")
    if central is not None:
        ax.axhline(central, color="black", linestyle="--", linewidth=1.2, label="centralized (pooled accuracy)")
    ax.set_xticks(levels)
    ax.set_xlabel("number of asynchronous agents")
    ax.set_ylabel("final local accuracy (mean ± std over draws)")
    ax.set_title("Robustness to asynchronous agents")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    return _save(fig, path)


def write_all(summary: dict, out_dir) -> list[Path]:
    """Write every figure the summary has data for into ``out_dir``; return the paths."""
    out_dir = Path(out_dir)
    written = [plot_accuracy_vs_communication(summary, out_dir / "accuracy_vs_communication.png")]
    for func, name in ((plot_layer_loss, "layer_loss.png"), (plot_async, "async.png")):
        result = func(summary, out_dir / name)
        if result is not None:
            written.append(result)
    return written
