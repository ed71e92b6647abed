"""Tests for surf_dist.io.plots: files written, valid PNGs, optional plots skipped."""
import math

import matplotlib.pyplot as plt

from surf_dist.io import plots
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _curve(n_points, max_round, bytes_per_round, start=0.1, end=0.9):
    """A synthetic learning curve with `n_points` evaluations up to `max_round`."""
    rounds = [round(i * max_round / (n_points - 1)) for i in range(n_points)]
    frac = [i / (n_points - 1) for i in range(n_points)]
    acc = [start + (end - start) * (1 - math.exp(-4 * f)) for f in frac]
    return {
        "rounds": rounds,
        "bytes_per_agent": [r * bytes_per_round for r in rounds],
        "loss": [2.3 * math.exp(-3 * f * end) + 0.05 for f in frac],
        "accuracy": acc,
        "local_accuracy": [a - 0.02 for a in acc],
    }


def _summary(with_learned=True):
    """Small synthetic summary; optionally with SURF/unrolled and async results."""
    methods = {name: _curve(11, 500, 4000 * (1 + i), end=0.7 + 0.05 * i) for i, name in
               enumerate(("dgd", "dsgd", "gradient_tracking", "dfedavgm"))}
    summary = {"methods": methods, "centralized": {"loss": 0.1, "accuracy": 0.92}}
    if with_learned:
        methods["surf"] = _curve(21, 20, 4000, end=0.88)
        methods["unrolled"] = _curve(21, 20, 4000, end=0.85)
        summary["async"] = {
            "n_async": [0, 1, 2, 5, 10],
            "surf": [[0.88, 0.87, 0.89], [0.87, 0.86, 0.88], [0.86, 0.85, 0.87],
                     [0.84, 0.82, 0.85], [0.8, 0.77, 0.82]],
            "unrolled": [[0.85, 0.84, 0.86], [0.8, 0.78, 0.82], [0.74, 0.7, 0.77],
                         [0.6, 0.55, 0.66], [0.45, 0.4, 0.5]],
        }
        summary["permuted_labels"] = {"surf": 0.8, "unrolled": 0.6}
    return summary


def _assert_png(path):
    """The file exists, starts with the PNG signature and is non-trivial in size."""
    assert path.is_file()
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5000


def test_write_all_full_summary(tmp_path):
    paths = plots.write_all(_summary(), tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["accuracy_vs_communication.png", "async.png", "layer_loss.png"]
    for p in paths:
        _assert_png(p)
    assert plt.get_fignums() == []  # figures closed


def test_write_all_baselines_only(tmp_path):
    paths = plots.write_all(_summary(with_learned=False), tmp_path)
    assert [p.name for p in paths] == ["accuracy_vs_communication.png"]
    _assert_png(paths[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy_vs_communication.png"]


def test_optional_plots_return_none(tmp_path):
    summary = _summary(with_learned=False)
    assert plots.plot_layer_loss(summary, tmp_path / "l.png") is None
    assert plots.plot_async(summary, tmp_path / "a.png") is None
    assert not any(tmp_path.iterdir())


def test_other_metric(tmp_path):
    path = plots.plot_accuracy_vs_communication(_summary(), tmp_path / "loss.png", metric="loss")
    _assert_png(path)
