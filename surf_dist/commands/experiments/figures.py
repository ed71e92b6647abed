"""The figure of each experiment (``NAME.png``), drawn with the styles of ``plots``."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    from ...io import plots  # selects the Agg backend
    return plots, plots.plt


def plot_layers(result: dict, path) -> Path:
    plots, plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    (ax_loss, ax_acc), (ax_g, ax_rise) = axes
    names = list(result["models"])
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        entry = result["models"][name]
        c, s = entry["curve"], entry["descent"]
        style = plots._style(name)
        layers = np.arange(len(c["loss"]))
        ax_loss.plot(layers, c["loss"], **style)
        ax_acc.plot(layers, c["local_accuracy"], **style)
        ax_acc.plot(layers, c["accuracy"], **{**style, "linestyle": "--", "label": style["label"] + " (pooled)"})
        for ax, key in ((ax_g, "violated"), (ax_rise, "rose")):
            x = layers[1:] + (i - (len(names) - 1) / 2) * width
            ax.bar(x, s[f"{key}_tasks"], width, color=style["color"], alpha=0.6, label=f"{style['label']}: tasks")
            ax.plot(x, s[f"{key}_agents"], linestyle="none", marker="v", color=style["color"],
                    label=f"{style['label']}: agents")
            for l, flag in zip(layers[1:], s[f"{key}_mean"]):
                if flag:
                    ax.annotate("*", (l + (i - (len(names) - 1) / 2) * width, 1.0), ha="center",
                                fontsize=12, color=style["color"], annotation_clip=False)
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="layer (0 = W_0)", ylabel="held-out loss (log scale)", title="Held-out loss per layer")
    ax_acc.set(xlabel="layer (0 = W_0)", ylabel="accuracy", title="Local (solid) and pooled (dashed) accuracy")
    eps = result["eps"]
    ax_g.set(xlabel="layer l", ylabel="fraction", ylim=(0, 1.08),
             title=f"Constraint violated: g_l > (1-{eps:g}) g_(l-1) ({result['descent']}, seen data)")
    ax_rise.set(xlabel="layer l", ylabel="fraction", ylim=(0, 1.08), title="Held-out loss rose from layer l-1")
    for ax in axes.ravel():
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        ax.xaxis.set_major_locator(plots.MaxNLocator(integer=True))
    fig.suptitle("Per-layer behaviour on test tasks (bars: fraction of tasks; triangles: fraction of agents; "
                 "'mean': the mean over tasks fails)", fontsize=10)
    fig.tight_layout()
    return plots._save(fig, path)


def plot_eps(result: dict, path) -> Path:
    plots, plt = _plt()
    fig, (ax_loss, ax_acc, ax_v) = plt.subplots(1, 3, figsize=(16, 4.8))
    cmap = plt.get_cmap("viridis")
    names = list(result["models"])
    for i, name in enumerate(names):
        e = result["models"][name]
        color = cmap(i / max(len(names) - 1, 1))
        c = e["curve"]
        label = f"eps = {e['eps']:g}"
        ax_loss.plot(c["rounds"], c["loss"], marker="o", color=color, label=label)
        ax_acc.plot(c["rounds"], c["local_accuracy"], marker="o", color=color,
                    label=f"{label} (reaches target at {e['rounds_to_target']} rounds)")
        t = e["totals"]
        ax_v.bar(i - 0.2, t["violated_fraction_task_layers"], 0.4, color=color, alpha=0.7)
        ax_v.bar(i + 0.2, t["violated_fraction_agent_layers"], 0.4, color=color, alpha=0.35, hatch="//")
        ax_v.annotate(f"{t['violated_layers_mean']} of {len(e['descent']['violated_mean'])}\nlayers (mean)",
                      (i, max(t["violated_fraction_task_layers"], t["violated_fraction_agent_layers"]) + 0.02),
                      ha="center", fontsize=8)
    ax_acc.axhline(result["target"], color="black", linestyle="--", linewidth=1, label=f"target {result['target']:.3f}")
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="communication rounds", ylabel="held-out loss (log scale)", title="Held-out loss per layer")
    ax_acc.set(xlabel="communication rounds", ylabel="local accuracy", title="Local accuracy per layer")
    ax_v.set_xticks(range(len(names)), [f"eps={result['models'][n]['eps']:g}" for n in names])
    ax_v.set(ylabel="fraction of (task, layer) / (agent, layer) pairs", ylim=(0, 1.1),
             title="Constraint violations on test tasks\n(solid: tasks; hatched: agents)")
    for ax in (ax_loss, ax_acc, ax_v):
        ax.grid(True, alpha=0.3)
    ax_loss.legend(fontsize=8)
    ax_acc.legend(fontsize=7)
    fig.tight_layout()
    return plots._save(fig, path)


def plot_async_figure(result: dict, path) -> Path:
    plots, _ = _plt()
    return plots.plot_async({"async": {"n_async": result["n_async"], **result["raw"]}}, path)


def plot_communication(result: dict, path) -> Path:
    plots, _ = _plt()
    return plots.plot_accuracy_vs_communication(result["summary"], path)


def plot_transfer(result: dict, path) -> Path:
    plots, plt = _plt()
    settings = result["settings"]
    methods = list(settings[0]["key"]["methods"]) if settings else []
    fig, (ax_acc, ax_r) = plt.subplots(1, 2, figsize=(14, 4.8))
    x = np.arange(len(settings))
    width = 0.8 / max(len(methods), 1)
    for i, name in enumerate(methods):
        vals = [s["key"]["methods"][name]["at_budget"]["local_accuracy"] for s in settings]
        style = plots._style(name)
        ax_acc.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, color=style["color"],
                   label=f"{style['label']} ({settings[0]['key']['budget_rounds']} rounds)" if settings else name)
    if settings:
        dgd_final = [s["key"]["methods"]["dgd"]["final"]["local_accuracy"] for s in settings]
        ax_acc.plot(x, dgd_final, linestyle="none", marker="_", markersize=18, color="black",
                    label=f"DGD at {result['baseline_rounds']} rounds")
        need = [s["key"]["methods"]["dgd"]["rounds_to_target"] for s in settings]
        horizon = result["baseline_rounds"]
        ax_r.bar(x, [n if n is not None else horizon for n in need], 0.5,
                 color=["tab:blue" if n is not None else "lightgray" for n in need])
        for xi, n in zip(x, need):
            ax_r.annotate(str(n) if n is not None else f">{horizon}", (xi, n or horizon), xytext=(0, 3),
                          textcoords="offset points", ha="center", fontsize=8)
        ax_r.axhline(settings[0]["key"]["budget_rounds"], color="tab:red", linestyle="--", label="SURF's rounds")
    labels = [s["label"] + ("\n(trained)" if s["kind"] == "trained on" else "") for s in settings]
    for ax in (ax_acc, ax_r):
        ax.set_xticks(x, labels, fontsize=8, rotation=15)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    lo = min([s["key"]["methods"][m]["at_budget"]["local_accuracy"] for s in settings for m in methods] or [0])
    ax_acc.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax_acc.set(ylabel="local accuracy on test tasks", title="Accuracy on graphs the models were not trained on")
    ax_r.set(ylabel="rounds", title="Tuned DGD: rounds to match SURF's local accuracy")
    fig.tight_layout()
    return plots._save(fig, path)
