"""The baselines of ``evaluate`` / ``baselines`` / ``experiment`` are the bench's: its registry,
grids and choice per round budget on its validation tasks (``summary_curves``); older configs
with the retired eval keys still load."""
import numpy as np
import pytest

from surf_dist.commands.bench.protocol import BenchConfig, choose, val_task_indices
from surf_dist.commands.bench.runner import run_grid, tune
from surf_dist.commands.bench.summary_curves import baseline_points, summary_bench, tuned_baselines
from surf_dist.commands.jobs import local_worker
from surf_dist.io.config import ConfigError, from_dict, preset, with_overrides


def test_a_summary_curve_is_the_test_value_of_the_benchs_validation_choice():
    cfg = with_overrides(preset("quick"), {"train": {"dtype": "float64"}, "eval": {"baseline_rounds": 12}})
    worker = local_worker(cfg)
    tasks = worker.family.batch("test", range(cfg.eval.test_tasks))
    curve = tuned_baselines(cfg, worker, tasks, progress=False, names=("dgd",))["dgd"]
    assert curve["rounds"] == baseline_points(cfg) == [0, 2, 4, 8, 12]
    bench = summary_bench(cfg)
    tuned = tune("dgd", worker, worker.family.batch("val", val_task_indices(bench)), bench, cfg.model.batch_size,
                 lambda _: None)
    last = choose(tuned["values"]["accuracy"], tuned["values"]["loss"], "accuracy")[-1]   # the 12-round budget
    config = tuned["configs"][int(last)]
    assert config["step"] in tuned["grids"]["step"] and config["start"] in ("zero", "task")
    assert curve["chosen"]["accuracy"][-1]["config"] == config
    alone = run_grid("dgd", worker, tasks, [config], 12, [12], bench.pool_cap, cfg.model.batch_size)
    assert curve["accuracy"][-1] == pytest.approx(float(np.mean(alone["values"]["accuracy"][0, :, 0])), abs=1e-12)


def test_older_configs_with_the_retired_eval_keys_load():
    data = preset("quick").to_dict()
    data["eval"].update(step_grid=[0.1, 1.0], local_steps=4, momentum=0.9)
    cfg = from_dict(data)
    assert cfg == preset("quick") and "step_grid" not in cfg.to_dict()["eval"]
    data["eval"]["step_grids"] = [0.1]          # a key that never was one is still refused
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(data)
    assert BenchConfig().step_grid            # the one step grid
