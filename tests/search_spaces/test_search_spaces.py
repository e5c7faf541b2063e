"""The shipped search spaces: registry, validity against the trial config, and smoke runs."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import search_spaces
from search_spaces import Choice, LogUniform, Space
from study.errors import StudyError
from study.listing import list_spaces
from study.plan import _combinations, build_plan
from study.spec import StudySpec
from tests.trainables.test_data import _write_cifar10
from trainables import TrialConfig, run

SHIPPED = (
    "k_sweep",
    "k_adaptive",
    "phase_diagram",
    "lr_sweep",
    "damping_sweep",
    "one_shot",
    "optuna_lr_k",
    "fig8_cpu",
    "paper_cifar10",
    "paper_fig8",
    "paper_fig9",
    "smoke",
)


def _spec(space: Space, smoke: bool = False, **kw: object) -> StudySpec:
    values = {"searcher": space.searcher, "num_samples": 2 if space.searcher != "grid" else 1,
              "data_dir": "/tmp/ilstudy-data"}  # fmt: skip
    values.update(kw)
    return StudySpec(space=space.name, smoke=smoke, **values)


def test_registry_lists_every_shipped_space_once() -> None:
    assert search_spaces.names() == SHIPPED
    assert [s.name for s in search_spaces.all_spaces()] == list(SHIPPED)
    with pytest.raises(KeyError, match="allowed: k_sweep"):
        search_spaces.get("nope")


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> str:
    """CIFAR-10 in torchvision's on-disk format, tiny: the paper spaces' tensors of the right
    shape (3×32×32, 10 classes) on a machine without the real files. torchvision checks the
    files by MD5, which tiny stand-ins cannot match."""
    import torchvision

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    _write_cifar10(tmp_path)
    return str(tmp_path)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_config_of_every_space_is_a_valid_trial_config(name: str, data_dir: str) -> None:
    space = search_spaces.get(name)
    assert space.description and "\n" not in space.description
    assert space.searcher in space.allowed_searchers()
    for smoke in (False, True):
        plan = build_plan(_spec(space, smoke=smoke, data_dir=data_dir))
        configs = list(_combinations(plan.space))
        assert configs, name
        for mapping in configs:
            TrialConfig.from_mapping(mapping)  # raises on any invalid value


# The smoke versions of the paper's CIFAR-10 spaces train its 250k-parameter CNN and measure
# its sharpness: `make test` runs them, the per-edit tier runs the other spaces.
CNN_SPACES = ("paper_cifar10", "paper_fig8")
SMOKE_RUNS = [pytest.param(n, marks=pytest.mark.slow) if n in CNN_SPACES else n for n in SHIPPED]


@pytest.mark.parametrize("name", SMOKE_RUNS)
def test_every_space_runs_in_smoke_mode(name: str, data_dir: str) -> None:
    """Each space's smoke version runs one trial to the end in-process, in seconds."""
    plan = build_plan(_spec(search_spaces.get(name), smoke=True, data_dir=data_dir))
    records = list(run(next(_combinations(plan.space))))
    assert records[0]["step"] == 0 and len(records) >= 2
    assert all(math.isfinite(r["train_loss"]) or r["diverged"] for r in records)


def test_spaces_sweep_what_the_issue_asks_for() -> None:
    k_sweep = search_spaces.get("k_sweep")
    # the main figure (issue 12): K=1 and K=∞ as levels, N = ⌈T/K⌉ − 1 dense in 1 … 30, lr tuned
    # per K, at least five seeds, a test set where one example is under 0.2 points
    ks, total = k_sweep.grid["k"], k_sweep.fixed["total_steps"]
    assert ks[0] == 1 and ks[-1] == "inf"
    updates = sorted(math.ceil(total / k) - 1 for k in ks[1:-1])
    assert updates[0] == 1 and 25 <= updates[-1] <= 35 and len(updates) >= 5
    assert len(k_sweep.grid["lr"]) >= 2 and len(k_sweep.grid["seed"]) >= 5
    assert k_sweep.fixed["dataset"] == "mnist5k"
    phase = search_spaces.get("phase_diagram")
    assert {"total_steps", "k"} <= set(phase.grid)
    lr = search_spaces.get("lr_sweep")
    assert set(lr.grid["trainer"]) == {"plain", "linearised"}
    assert min(lr.grid["lr"]) == pytest.approx(1e-3) and max(lr.grid["lr"]) == 10.0
    assert len(lr.grid["seed"]) >= 3
    damping = search_spaces.get("damping_sweep").grid["damping"]
    assert damping[0] == pytest.approx(1e-6) and damping[-1] == pytest.approx(1e3)
    ratios = [b / a for a, b in itertools.pairwise(damping)]
    assert ratios == pytest.approx([ratios[0]] * len(ratios))  # a log grid
    one_shot = search_spaces.get("one_shot")
    assert one_shot.fixed["schedule"] == "one_shot" and len(one_shot.grid["one_shot_at"]) >= 3
    optuna = search_spaces.get("optuna_lr_k")
    assert optuna.searcher == "optuna"
    assert isinstance(optuna.distributions["lr"], LogUniform)
    assert isinstance(optuna.distributions["k"], Choice)
    assert search_spaces.get("smoke").grid_size() <= 4


def test_k_inf_becomes_float_inf_in_the_trial_config() -> None:
    cfg = TrialConfig.from_mapping({**search_spaces.get("k_sweep").fixed, "k": "inf"})
    assert cfg.k_float == math.inf


def test_overrides_fix_a_swept_key_and_num_samples_repeats_with_fresh_seeds() -> None:
    space = search_spaces.get("k_sweep")
    plan = build_plan(_spec(space, overrides={"k": 10}))
    assert "k" not in plan.space.grid and plan.space.fixed["k"] == 10
    refs = len(space.reference_points())  # each plain Adam arm (one per lr), once per seed
    assert refs == len(space.references) * len(space.grid["seed"])
    assert plan.total_trials == space.grid_size() // len(space.grid["k"]) + refs
    repeated = build_plan(_spec(space, num_samples=2))
    assert repeated.total_trials == 2 * space.grid_size() + 2 * refs  # the arm gets the seeds too
    assert len(set(repeated.space.grid["seed"])) == 2 * len(space.grid["seed"])


def _with_refs(references: tuple, **grid: list) -> Space:
    return Space(
        name="refs", description="", fixed={"dataset": "digits", "total_steps": 20},
        grid={"k": [1, "inf"], "lr": [0.05, 0.1], "seed": [0, 1], **grid},
        references=references,
    )  # fmt: skip


def test_a_reference_arm_runs_once_per_seed_as_tune_points_before_the_grid(monkeypatch) -> None:
    space = _with_refs(({"trainer": "plain", "optimizer": "adam", "lr": 0.001, "k": 1},))
    monkeypatch.setattr("study.plan.get_space", lambda name, stored=None: space)
    plan = build_plan(_spec(space))
    assert plan.total_trials == 2 * 2 * 2 + 2
    # Tune evaluates each point first, using up one sample; the last sample is the grid pass
    assert plan.tune_num_samples == 3
    alg = plan.search_alg()
    points = alg._points_to_evaluate
    assert points == [
        {"trainer": "plain", "optimizer": "adam", "lr": 0.001, "k": 1, "seed": 0},
        {"trainer": "plain", "optimizer": "adam", "lr": 0.001, "k": 1, "seed": 1},
    ]
    # every key a point sets is in the param space (Tune takes presets only for known keys)
    assert {"trainer", "optimizer"} <= set(plan.param_space())
    assert plan.space.allowed_searchers() == ("grid",)


def test_a_reference_arm_must_set_every_swept_key_and_is_no_copy_of_a_grid_point(
    monkeypatch,
) -> None:
    missing = _with_refs(({"trainer": "plain", "optimizer": "adam", "lr": 0.001},))
    monkeypatch.setattr("study.plan.get_space", lambda name, stored=None: missing)
    with pytest.raises(StudyError, match="must set every swept key; missing k"):
        build_plan(_spec(missing))
    copy = _with_refs(({"k": 1, "lr": 0.05},))
    monkeypatch.setattr("study.plan.get_space", lambda name, stored=None: copy)
    with pytest.raises(StudyError, match="same trial"):
        build_plan(_spec(copy))


def test_grid_searcher_is_refused_for_continuous_distributions() -> None:
    space = search_spaces.get("optuna_lr_k")
    with pytest.raises(StudyError, match="allowed: random, optuna"):
        build_plan(_spec(space, searcher="grid"))
    assert build_plan(_spec(space, searcher="random", num_samples=5)).total_trials == 5


def test_an_override_that_breaks_a_config_is_named() -> None:
    with pytest.raises(StudyError, match="momentum"):
        build_plan(
            _spec(search_spaces.get("smoke"), overrides={"optimizer": "adam", "momentum": 0.5})
        )


def test_list_shows_each_space_with_trials_and_expected_time() -> None:
    text = list_spaces(cpus=2)
    for space in search_spaces.all_spaces():
        line = next(line for line in text.splitlines() if line.startswith(space.name + " "))
        assert "~" in line and space.description in line, line  # calibrated or estimated
    k_line = next(line for line in text.splitlines() if line.startswith("k_sweep "))
    space = search_spaces.get("k_sweep")
    # K × lr × seeds, and each Adam arm once per seed
    assert f" {space.grid_size() + len(space.reference_points())} " in k_line
    assert space.grid_size() == math.prod(len(v) for v in space.grid.values())
    assert len(space.reference_points()) == len(space.references) * len(space.grid["seed"])
    assert "python -m benchmarks.calibrate" in text.splitlines()[-1]  # where ~ comes from


def test_expected_time_is_the_calibration_in_waves_plus_start_up(monkeypatch) -> None:
    from study import plan as plan_module

    made = {"startup_s": 7.0, "per_trial_overhead_s": 0.5, "spaces": {"smoke": {"trial_s": 2.0}}}
    monkeypatch.setattr(plan_module, "calibration", lambda: made)
    smoke = search_spaces.get("smoke")
    assert plan_module.estimate_seconds(smoke, 5, cpus=2) == 7.0 + 3 * 2.5  # 3 waves of 2
    assert plan_module.estimate_seconds(smoke, 5, cpus=2, builtin=False) is None  # a file's
    fig9 = search_spaces.get("paper_fig9")  # not calibrated here: its stated estimate
    assert plan_module.trial_seconds(fig9) == (fig9.seconds_per_trial, "estimate")


def test_the_calibration_times_configs_spread_over_the_grid() -> None:
    from benchmarks.calibrate import _configs

    picked = _configs("k_sweep", 3)
    ks = [c["k"] for c in picked]
    assert len(picked) == 3 and len(set(ks)) > 1  # first, middle and last points
    assert any(c.get("trainer") == "plain" for c in _configs("k_sweep", 1000))  # the Adam arm


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", SHIPPED)
def test_no_space_ranks_on_the_test_set(name: str, data_dir: str) -> None:
    """Every space ranks (searcher, progress line, best trial) on a validation metric: on a test
    metric, whichever grid point is reported best was selected on test. Its smoke version and
    the plan a study builds from either rank the same way."""
    space = search_spaces.get(name)
    for smoke in (False, True):
        ranked = space.smoke_version() if smoke else space
        plan = build_plan(_spec(space, smoke=smoke, data_dir=data_dir))
        for metric in (ranked.metric, plan.metric):
            assert metric.startswith("val_"), (name, smoke, metric)


def test_a_space_that_names_no_metric_ranks_on_validation() -> None:
    from search_spaces.from_file import DEFAULT_METRIC

    assert Space(name="x", description="").metric == DEFAULT_METRIC == "val_acc"


def test_grid_and_random_generators_get_the_concurrency_limit_themselves() -> None:
    """Tune applies max_concurrent_trials only to a Searcher; a variant generator (grid with
    reference arms, random) must carry the limit or --max-concurrent is ignored."""
    random_plan = build_plan(_spec(search_spaces.get("optuna_lr_k"), searcher="random"))
    assert random_plan.search_alg(3).max_concurrent == 3
    grid_plan = build_plan(_spec(search_spaces.get("k_sweep")))  # its Adam arm: a generator
    assert grid_plan.search_alg(2).max_concurrent == 2


def test_smoke_shrinks_a_searchers_budget_too() -> None:
    from study.service import StudyOptions, new_spec

    assert new_spec(StudyOptions(space="k_adaptive", smoke=True)).num_samples == 3
    assert new_spec(StudyOptions(space="k_adaptive")).num_samples == 40


def _arm_cells(name: str, data_dir: str, smoke: bool = False) -> dict[tuple, dict[float, set]]:
    """Every trial of a space (grid and reference arms) as arm → lr → seeds, the arm being the
    effective config without lr and seed: what a report tunes lr within."""
    plan = build_plan(_spec(search_spaces.get(name), smoke=smoke, data_dir=data_dir))
    cells: dict[tuple, dict[float, set]] = {}
    for mapping in _combinations(plan.space):
        cfg = TrialConfig.from_mapping(mapping).to_dict()
        lr, seed = cfg.pop("lr"), cfg.pop("seed")
        cells.setdefault(tuple(sorted(cfg.items())), {}).setdefault(lr, set()).add(seed)
    return cells


def test_fig8_cpu_has_four_arms_each_with_its_own_lr_grid_and_five_seeds(data_dir: str) -> None:
    cells = _arm_cells("fig8_cpu", data_dir)
    arms = {
        (a["trainer"], a["optimizer"], a["solve_to_convergence"], a["k"])
        for a in (dict(arm) for arm in cells)
    }
    assert arms == {
        ("linearised", "adam", True, "inf"),  # IL, each linear model solved to convergence
        ("linearised", "adam", False, "inf"),  # K = ∞
        ("plain", "sgd", False, 1),  # SGD at K = 1
        ("plain", "adam", False, 1),  # Adam at K = 1
    }
    for arm, by_lr in cells.items():
        lrs = sorted(by_lr)
        assert len(lrs) >= 3, arm
        ratios = [b / a for a, b in itertools.pairwise(lrs)]
        assert all(2 <= r <= 4 for r in ratios), (arm, lrs)  # roughly geometric
        assert all(len(seeds) >= 5 for seeds in by_lr.values()), arm
    converge = search_spaces.get("fig8_cpu")
    assert converge.fixed["dataset"] == "digits" and converge.metric == "val_acc"


def test_damping_sweep_tunes_at_least_three_lrs_per_damping_in_damped_units(data_dir: str) -> None:
    space = search_spaces.get("damping_sweep")
    assert space.fixed["lr_units"] == "damped"
    cells = _arm_cells("damping_sweep", data_dir)
    dampings = {dict(arm)["damping"] for arm in cells}
    assert len(dampings) == len(space.grid["damping"]) == len(cells)
    for arm, by_lr in cells.items():
        assert len(by_lr) >= 3 and all(len(seeds) >= 3 for seeds in by_lr.values()), arm
    fig9 = search_spaces.get("paper_fig9")
    assert fig9.fixed["lr_units"] == "damped" and len(fig9.grid["seed"]) >= 3
    assert len(fig9.grid["lr"]) >= 3


@pytest.mark.parametrize("name", ["fig8_cpu", "damping_sweep"])
def test_every_smoke_trial_of_the_new_spaces_runs_in_process(name: str, data_dir: str) -> None:
    """All of the smoke version's trials, reference arms included, run to the end in seconds."""
    plan = build_plan(_spec(search_spaces.get(name), smoke=True, data_dir=data_dir))
    configs = list(_combinations(plan.space))
    assert len(configs) == plan.total_trials
    for config in configs:
        records = list(run(config))
        assert records[-1]["step"] == plan.space.fixed["total_steps"]
        assert all(math.isfinite(r["val_acc"]) for r in records)
