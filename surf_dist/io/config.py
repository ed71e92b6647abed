"""Configuration: frozen dataclasses and named presets.

A preset is plain data: ``surf-dist config --preset default`` prints it as JSON, a user edits
that file and passes it back with ``--config FILE``. Command-line overrides are applied on top
with ``with_overrides``.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .field_checks import ConfigError, check_types, choice, finite, json_type, positive
from .file_checks import read_text_file

LOCAL_NETS = ("compact", "paper")
DESCENT_FUNCTIONS = ("loss", "grad_norm")
OBJECTIVES = ("local", "pooled")
STARTS = ("zero", "task")          # W_0 = 0, or the task's W_0; the bench tries them in this order
DTYPES = ("float32", "float64")
ASYNC_MODES = ("zeros", "stale")
MAX_ROUNDS = 100_000       # baseline rounds: each is run (issue 25: more were once recorded but not run)
COMBINES = ("cta", "atc")


@dataclass(frozen=True)
class TaskConfig:
    """A task family: graph family, data partition, initial point."""
    dataset: str = "digits"
    data_root: str = ""
    num_agents: int = 100
    topology: str = "paper_circulant"      # preset name (problem/topologies/) or a JSON path
    alpha: float = 0.7                     # Dirichlet label skew; math.inf -> IID
    samples_seen: int = 12                 # per agent, fed to the layers in mini-batches
    samples_held: int = 4                  # per agent, held out for the outer loss / accuracy
    held_fraction: float = 0.25            # share of a task's pool reserved for held-out samples
    init_std: float = 1.0                  # W_0 ~ N(0, init_std^2)
    feature_noise: float = 0.0             # augmentation: N(0, feature_noise^2) added per task
    compress: str = "none"                 # what every message carries: none, qB, topk:K, randk:K (comm/compress.py)
    link_failure: float = 0.0              # each edge fails independently per round with this probability

    def __post_init__(self):
        check_types(self)
        finite(self, allow_inf=("alpha",))
        positive(self, "num_agents", "samples_seen", "samples_held")
        if self.num_agents < 2:
            raise ConfigError("num_agents", "num_agents must be at least 2 for a decentralized task, "
                              f"got {self.num_agents}")
        if not (self.alpha > 0):
            raise ConfigError("alpha", f"alpha must be > 0 (inf for IID), got {self.alpha}")
        if not 0 < self.held_fraction < 1:
            raise ConfigError("held_fraction", f"held_fraction must lie in (0, 1), got {self.held_fraction}")
        if not 0 <= self.link_failure < 1:
            raise ConfigError("link_failure", f"link_failure must lie in [0, 1) (the probability that an edge "
                              f"fails in a round), got {self.link_failure}; use 0 for no failures")
        for name in ("init_std", "feature_noise"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class ModelConfig:
    """The unrolled network."""
    num_layers: int = 10
    num_hops: int = 2
    local_net: str = "compact"
    batch_size: int = 8                    # mini-batch per agent per layer
    hidden: int = 16                       # hidden width of the local network
    local_steps: int = 1                   # compact net: local sub-steps per layer (no communication)
    init_step: float = 0.5                 # initial gradient step of every layer
    tracking: bool = False                 # compact net: also track the network-average gradient
    momentum: bool = False                 # W_(l+1) += beta_l (W_l - W_(l-1)): heavy ball across layers
    momentum_init: float = 0.5             # initial beta_l
    zero_init: bool = False                # compact net: the learned term starts at zero (untrained = DGD)
    start: str = "task"                    # the first iterate: the task's W_0, or zero (as a baseline may choose)
    combine: str = "cta"                   # cta: filter W, then subtract the local update (DGD); atc: local update
                                           # first, then filter the adapted iterate (diffusion: round 1 carries data)
    warmup_steps: int = 0                  # compact net: plain local gradient steps (learned sizes) on the agent's
                                           # whole seen data before the first layer's update: round 1 sends a
                                           # locally trained model (the local-step baselines' first move)
    correction: bool = False               # atc: + c_l * (the agent's previous local update), with momentum the
                                           # exact-diffusion / NIDS correction (c = beta = 1, taps (1/2, 1/2))

    def __post_init__(self):
        check_types(self)
        finite(self)
        positive(self, "num_layers", "num_hops", "batch_size", "hidden", "local_steps")
        choice(self, "local_net", LOCAL_NETS)
        choice(self, "start", STARTS)
        choice(self, "combine", COMBINES)
        if self.warmup_steps < 0:
            raise ConfigError("warmup_steps", f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.warmup_steps and self.local_net != "compact":
            raise ConfigError("warmup_steps", "warmup_steps needs the compact local network")
        if self.correction and self.combine != "atc":
            raise ConfigError("correction", "correction needs combine = atc (the correction is applied before the "
                                            "graph filter); pass --combine atc or --correction false")
        if self.init_step <= 0:
            raise ConfigError("init_step", f"init_step must be > 0, got {self.init_step}")


@dataclass(frozen=True)
class TrainConfig:
    """Primal-dual meta-training."""
    steps: int = 300
    tasks_per_step: int = 4
    lr: float = 3e-3
    lr_floor: float = 1.0                  # cosine decay of the learning rate to lr * lr_floor (1: constant)
    dual_lr: float = 0.1
    eps: float = 0.05                      # descent constraint: g(W_l) <= (1 - eps) g(W_{l-1})
    descent: str = "loss"
    objective: str = "local"               # last-layer loss on the agent's own held-out data, or on its task's pool
    anytime: bool = False                  # the objective averaged over every layer's iterate, not the last one's
    constrained: bool = True
    val_every: int = 25
    val_tasks: int = 8
    async_train: int = 0                   # agents dropped per layer during training (0: off)
    init_from: str = ""                    # a run folder whose model starts meta-training ("": fresh)
    mixture: tuple[str, ...] = ()          # more training settings, PRESET[:TOPOLOGY[:AGENTS]] each: the steps
                                           # draw their tasks from the run's own setting and these in turn
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self):
        check_types(self)
        finite(self)
        positive(self, "steps", "tasks_per_step", "val_every", "val_tasks")
        choice(self, "descent", DESCENT_FUNCTIONS)
        choice(self, "objective", OBJECTIVES)
        choice(self, "dtype", DTYPES)
        if not 0 <= self.eps < 1:
            raise ConfigError("eps", f"eps must lie in [0, 1), got {self.eps}")
        if not 0 < self.lr_floor <= 1:
            raise ConfigError("lr_floor", f"lr_floor must lie in (0, 1], got {self.lr_floor}")
        if self.lr <= 0:
            raise ConfigError("lr", f"lr must be > 0, got {self.lr}")
        if self.dual_lr < 0:
            raise ConfigError("dual_lr", f"dual_lr must be >= 0, got {self.dual_lr}")
        if not 0 <= self.seed < 2 ** 63:
            raise ConfigError("seed", f"seed must be an integer in [0, 2^63), got {self.seed}")
        for entry in self.mixture:
            mixture_task(entry)


@dataclass(frozen=True)
class EvalConfig:
    """Test tasks, baselines and the robustness sweeps."""
    test_tasks: int = 10
    baseline_rounds: int = 500
    eval_points: tuple[int, ...] = (0, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 100, 125, 150, 200,
                                     250, 300, 400, 500)
    tune_tasks: int = 3                    # validation tasks the baselines are tuned on (the bench's rule)
    async_levels: tuple[int, ...] = (0, 1, 2, 5, 10)
    async_draws: int = 20
    async_mode: str = "zeros"

    def __post_init__(self):
        check_types(self)
        finite(self)
        positive(self, "test_tasks", "baseline_rounds", "tune_tasks", "async_draws")
        choice(self, "async_mode", ASYNC_MODES)
        if self.baseline_rounds > MAX_ROUNDS:
            raise ConfigError("baseline_rounds", f"baseline_rounds must be at most {MAX_ROUNDS:,} (every round is "
                              f"run, none is skipped), got {self.baseline_rounds:,}")
        if (not self.eval_points or sorted(self.eval_points) != list(self.eval_points)
                or self.eval_points[0] != 0):
            raise ConfigError("eval_points", "eval_points must be increasing and start at 0, "
                              f"got {list(self.eval_points)}")
        if any(level < 0 for level in self.async_levels):
            raise ConfigError("async_levels", f"async_levels must be >= 0, got {list(self.async_levels)}")


@dataclass(frozen=True)
class RunConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        if self.model.batch_size > self.task.samples_seen:
            raise ConfigError("batch_size", f"batch_size {self.model.batch_size} exceeds samples_seen "
                             f"{self.task.samples_seen}: a mini-batch is drawn from the agent's own samples")
        if max(self.eval.async_levels, default=0) > self.task.num_agents:
            raise ConfigError("async_levels", f"async_levels cannot exceed num_agents = {self.task.num_agents}, "
                              f"got {list(self.eval.async_levels)}")
        for entry in self.train.mixture:
            task = mixture_task(entry)
            if self.model.local_net != "compact":
                raise ConfigError("mixture", "a mixture of settings needs the compact local network (the paper's "
                                             "is tied to one dataset's size); pass --local-net compact")
            if self.model.batch_size > task.samples_seen or self.train.async_train >= task.num_agents:
                raise ConfigError("mixture", f"mixture entry {entry!r}: its {task.samples_seen} samples an agent and "
                                             f"{task.num_agents} agents do not fit batch_size {self.model.batch_size} "
                                             f"and async_train {self.train.async_train}")
        if not 0 <= self.train.async_train < self.task.num_agents:
            raise ConfigError("async_train", f"async_train must lie in [0, num_agents = {self.task.num_agents}): the agents "
                             f"dropped per task and layer while training, got {self.train.async_train}")

    def to_dict(self) -> dict:
        return _jsonable(dataclasses.asdict(self))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and math.isinf(obj):
        return "inf"
    return obj


def _section(cls, data, where: str):
    if not isinstance(data, dict):
        raise ConfigError(where, f"config section '{where}' must be a JSON object of settings, "
                                 f"got {json_type(data)}")
    names = {f.name for f in dataclasses.fields(cls)}
    data = {key: value for key, value in data.items() if key not in RETIRED_KEYS.get(where, ())}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(unknown[0], f"unknown key(s) {unknown} in config section '{where}'; "
                                      f"valid: {sorted(names)}")
    kinds = {f.name: f.type for f in dataclasses.fields(cls)}
    kwargs = {key: (math.inf if kinds[key] == "float" and value == "inf" else value)
              for key, value in data.items()}
    return cls(**kwargs)


SECTIONS = {"task": TaskConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}
# Keys of older configs (and of the models saved with them), read and ignored: the baselines'
# own step grid and DFedAvgM settings gave way to the bench's grids and tuning rule
# (``BenchConfig``), which every command uses.
RETIRED_KEYS = {"eval": ("step_grid", "local_steps", "momentum")}


def from_dict(data) -> RunConfig:
    if not isinstance(data, dict):
        raise ConfigError("", f"a config must be a JSON object with sections {sorted(SECTIONS)}, "
                              f"got {json_type(data)}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(unknown[0], f"unknown config section(s) {unknown}; valid: {sorted(SECTIONS)}")
    return RunConfig(**{name: _section(cls, data.get(name, {}), name) for name, cls in SECTIONS.items()})


def _no_duplicate_keys(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"key(s) {twice[:5]} given twice in one object (JSON keeps only the last, silently); "
                         "give each once")
    return dict(pairs)


def parse_json(text: str, source: str):
    """Strict JSON of a user's file (a --config, a topology): no key twice in one object (JSON
    parsers keep the last), no nesting beyond reason; ValueError naming
    ``source``. The one parser of issue 25 for every JSON file a user gives."""
    try:        # NaN and Infinity are read: the settings' checks name the key that holds one
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source} is not valid JSON: {err}") from None
    except RecursionError:
        raise ValueError(f"{source} nests its JSON too deeply to be a config; a config is an object of "
                         "sections of settings ('surf-dist config' prints one)") from None
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def load_config(path: str | Path, base: "RunConfig | None" = None, on_missing=None) -> RunConfig:
    """The settings of a config file; a key it leaves out comes from ``base`` (a preset; by
    default the dataclasses' defaults, the 'paper' preset), and ``on_missing(keys)`` is told
    which (``section.key``) where there are any."""
    path = Path(path)
    text = read_text_file(path, "config file", hint="JSON from 'surf-dist config'")
    data = parse_json(text, f"config file {path}")
    try:
        cfg = from_dict(_filled(data, base) if base is not None else data)
        if on_missing is not None and missing_keys(data):
            on_missing(missing_keys(data))
        return cfg
    except ConfigError as err:
        raise ConfigError(err.field, f"config file {path}: {err}") from None


def missing_keys(data) -> list[str]:
    """The settings (``section.key``) a config's data leaves out."""
    if not isinstance(data, dict):
        return []
    return [f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)
            if not isinstance(data.get(name), dict) or f.name not in data[name]]


def _filled(data, base: "RunConfig"):
    """``data`` with the keys it leaves out taken from ``base`` (data that is no config: as is)."""
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        return data
    full = base.to_dict()
    return {**{name: {**full[name], **data.get(name, {})} for name in SECTIONS},
            **{k: v for k, v in data.items() if k not in SECTIONS}}


def with_overrides(config: RunConfig, overrides: dict[str, dict]) -> RunConfig:
    """Replace fields: ``{"task": {"num_agents": 20}, ...}`` (only non-empty sections)."""
    data = config.to_dict()
    for section, values in overrides.items():
        data[section].update(values)
    return from_dict(data)


# The default network: adapt then combine, started as exact diffusion / NIDS with 4 local sub-steps.
ATC_NIDS = ModelConfig(num_layers=20, num_hops=1, local_steps=4, start="zero", combine="atc", momentum=True,
                       momentum_init=1.0, correction=True, zero_init=True)

PRESETS: dict[str, RunConfig] = {
    # The paper's federated setting scaled to the embedded digits (see README): 20 layers of one
    # hop (20 communication rounds), 4 local gradient sub-steps per layer, adapt then combine with
    # the exact-diffusion correction (the untrained network is NIDS with 4 local sub-steps per
    # round), started at W_0 = 0, meta-trained for the pooled held-out data at every layer (every
    # round budget), 300 steps with a cosine learning rate (docs/RESULTS.md, "Adapt then combine").
    "default": RunConfig(model=ATC_NIDS,
                         train=TrainConfig(steps=300, eps=0.02, lr_floor=0.1, objective="pooled", anytime=True)),
    # The default before adapt-then-combine layers (``pretrained:cta``): unrolled DGD layers
    # (filter, then subtract the local update), 450 steps.
    "cta": RunConfig(model=ModelConfig(num_layers=20, num_hops=1, local_steps=4, start="zero"),
                     train=TrainConfig(steps=450, eps=0.02, lr_floor=0.1, objective="pooled", anytime=True)),
    # The default until issue 17: each agent's own held-out data, last layer only, from the
    # task's W_0, 900 steps (``pretrained:local``, ``:scratch`` and ``:robust`` were trained so).
    "local": RunConfig(model=ModelConfig(num_layers=20, num_hops=1, local_steps=4),
                       train=TrainConfig(steps=900, eps=0.02, lr_floor=0.1)),
    # The paper's unrolling: 10 layers of 2 hops (the same 20 rounds), one local step, 300
    # meta-steps; the default until issue 7 and the setting of the benchmarks' recorded numbers.
    "paper": RunConfig(),
    # The default's network and training on a larger data setting (``surf-dist bench --preset
    # large``): a 64-feature Gaussian mixture of 200,000 samples with overlapping classes, 40
    # samples per agent (4,000 per task, 11x the distinct samples of a digits task), so task draws
    # barely overlap; d = 650 as on the digits, so the shipped optimizers run on it unchanged.
    "large": RunConfig(task=TaskConfig(dataset="synthetic64", samples_seen=30, samples_held=10),
                       model=ATC_NIDS,
                       train=TrainConfig(steps=300, eps=0.02, lr_floor=0.1, objective="pooled", anytime=True)),
    # The default's network and training on MNIST-1D (random conv features, d = 650 as on the
    # digits): 20,000 procedurally generated signals, 30 held-out samples per agent (3,000 a task).
    "mnist1d": RunConfig(task=TaskConfig(dataset="mnist1d", samples_seen=12, samples_held=30, held_fraction=0.6),
                         model=ATC_NIDS,
                         train=TrainConfig(steps=300, eps=0.02, lr_floor=0.1, objective="pooled", anytime=True)),
    # A small version for tests and smoke runs: seconds on 2 cores.
    "quick": RunConfig(
        task=TaskConfig(num_agents=8, topology="ring", samples_seen=8, samples_held=4),
        model=ModelConfig(num_layers=4, num_hops=2, batch_size=4, hidden=8),
        train=TrainConfig(steps=6, tasks_per_step=2, val_every=3, val_tasks=2),
        eval=EvalConfig(test_tasks=2, baseline_rounds=20, eval_points=(0, 2, 4, 8, 12, 20),
                        tune_tasks=2, async_levels=(0, 1, 2), async_draws=2),
    ),
}


def mixture_task(entry: str) -> TaskConfig:
    """The task settings of one meta-training mixture entry ``PRESET[:TOPOLOGY[:AGENTS]]``: the
    preset's task section, its topology and agent count replaced where given (``large``,
    ``default:ring:30``). The topology's name is checked where graphs are known (``cli.preflight``)."""
    parts = entry.split(":")
    if len(parts) > 3 or parts[0] not in PRESETS or not all(parts):
        raise ConfigError("mixture", f"mixture entry {entry!r}: expected PRESET[:TOPOLOGY[:AGENTS]] with PRESET one "
                                     f"of {sorted(PRESETS)}, e.g. large or default:ring:30")
    task = PRESETS[parts[0]].task
    if len(parts) > 1:
        if "/" in parts[1] or "." in parts[1]:     # no file: a mixture's graphs are the package's presets
            raise ConfigError("mixture", f"mixture entry {entry!r}: TOPOLOGY must be a preset name, not a file")
        task = dataclasses.replace(task, topology=parts[1])
    if len(parts) > 2:
        if not parts[2].isdigit():
            raise ConfigError("mixture", f"mixture entry {entry!r}: AGENTS must be a whole number, got {parts[2]!r}")
        try:
            task = dataclasses.replace(task, num_agents=int(parts[2]))
        except ConfigError as err:
            raise ConfigError("mixture", f"mixture entry {entry!r}: {err}") from None
    return task


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
    return PRESETS[name]
