"""The optimizer shipped with the package (surf_dist/pretrained): what it was trained as, and
that it still optimizes with the code as it is now."""
import torch

from surf_dist.config import preset
from surf_dist.evaluate import evaluate_unrolled
from surf_dist.jobs import load_model, local_worker, run_config
from surf_dist.pretrained import resolve_run


def test_shipped_model_is_the_default_preset_trained_on_seed_0():
    """A change of the default preset that the shipped model no longer matches fails here:
    retrain it (surf_dist/pretrained/README.md) or keep the preset."""
    assert run_config(resolve_run("pretrained")) == preset("default")
    assert resolve_run("pretrained:default") == resolve_run("pretrained")
    assert str(resolve_run("runs/x")) == "runs/x"


def test_shipped_model_optimizes_a_test_task_and_one_with_permuted_labels():
    """On a default test task it reaches > 0.9 local accuracy in 20 rounds from chance (0.1),
    also when the labels are permuted (recorded over 10 tasks: 0.939 and 0.936)."""
    torch.set_num_threads(1)
    cfg = preset("default")
    worker = local_worker(cfg)
    model = load_model(resolve_run("pretrained"), worker)
    for permute in (False, True):
        curve = evaluate_unrolled(model, worker, worker.family.batch("test", [0], permute_labels=permute))
        assert curve["rounds"][-1] == 20
        assert curve["local_accuracy"][0] < 0.3 and curve["local_accuracy"][-1] > 0.9
