"""The trial config: typing, defaults and the bad-config table."""

from __future__ import annotations

import dataclasses
import math

import pytest

from trainables import TrialConfig, parse_override


@pytest.mark.parametrize(
    ("mapping", "names"),
    [
        ({"nope": 1}, ["'nope'", "allowed keys", "total_steps"]),
        ({"k": 0}, ["k=0", "int >= 1 or 'inf'"]),
        ({"k": "abc"}, ["k=abc", "int >= 1 or 'inf'"]),
        ({"k": 2.5}, ["k=2.5", "int >= 1 or 'inf'"]),
        ({"k": -1}, ["k=-1"]),
        ({"lr": -1}, ["lr=-1", ">= 0"]),
        ({"lr": 0}, ["lr=0", "> 0"]),
        ({"damping": -1}, ["damping=-1", ">= 0"]),
        ({"total_steps": 0}, ["total_steps=0", ">= 1"]),
        ({"batch_size": -3}, ["batch_size=-3", ">= 0"]),
        ({"dataset": "imagenet"}, ["dataset=imagenet", "digits", "cifar10", "synthetic"]),
        ({"model": "resnet"}, ["model=resnet", "mlp, cnn"]),
        ({"loss": "hinge"}, ["loss=hinge", "cross_entropy, mse"]),
        ({"optimizer": "lbfgs"}, ["optimizer=lbfgs", "sgd, adam"]),
        ({"solver": "qr"}, ["solver=qr", "auto, exact, cg"]),
        ({"trainer": "ntk"}, ["trainer=ntk", "linearised"]),
        ({"schedule": "cosine"}, ["schedule=cosine", "uniform, geometric, one_shot"]),
        ({"momentum": 1.0}, ["momentum=1.0", "[0, 1)"]),
        ({"model": "cnn", "dataset": "synthetic"}, ["model=cnn", "image dataset"]),
        ({"total_steps": "ten"}, ["total_steps=ten", "int"]),
        ({"download": "maybe"}, ["download=maybe", "true or false"]),
        ({"lr": "nan"}, ["lr=", "number"]),
    ],
)
def test_bad_config_raises_value_error_naming_key_value_and_rule(mapping, names):
    with pytest.raises(ValueError) as err:
        TrialConfig.from_mapping(mapping)
    message = str(err.value)
    assert "\n" not in message
    for fragment in names:
        assert fragment in message


def test_values_are_typed_from_strings_like_a_cli_gives():
    cfg = TrialConfig.from_mapping(
        {"k": "100", "lr": "1e-3", "total_steps": "5000", "download": "true", "batch_size": "0"}
    )
    assert cfg.k == 100 and isinstance(cfg.k, int)
    assert (
        cfg.lr == 1e-3 and cfg.total_steps == 5000 and cfg.download is True and cfg.batch_size == 0
    )
    assert TrialConfig.from_mapping({"k": "inf"}).k == math.inf
    assert TrialConfig.from_mapping({"k": "∞"}).k_float == math.inf
    assert TrialConfig.from_mapping({"k": 1e3, "total_steps": 5000}).k == 1000


def test_k_at_least_total_steps_is_infinite_and_non_linearised_trainers_have_k_1():
    assert TrialConfig.from_mapping({"k": 2000, "total_steps": 2000}).k == math.inf
    assert TrialConfig.from_mapping({"k": 1999, "total_steps": 2000}).k == 1999
    assert TrialConfig.from_mapping({"trainer": "plain", "k": "inf"}).k == 1
    assert TrialConfig.from_mapping({"trainer": "gauss_newton"}).k == 1


def test_to_dict_roundtrips_and_is_plain():
    cfg = TrialConfig.from_mapping({"k": "inf", "lr": 0.2, "dataset": "synthetic"})
    d = cfg.to_dict()
    assert d["k"] == "inf"
    assert all(isinstance(v, (int, float, str, bool)) for v in d.values())
    assert TrialConfig.from_mapping(d) == cfg
    assert set(TrialConfig.defaults()) == {f.name for f in dataclasses.fields(TrialConfig)}


def test_config_is_frozen():
    cfg = TrialConfig.from_mapping({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]


def test_parse_override():
    assert parse_override("k=10") == ("k", 10)
    assert parse_override("k=inf") == ("k", math.inf)
    assert parse_override("data_dir=/data/x") == ("data_dir", "/data/x")
    assert parse_override(" lr = 0.5 ") == ("lr", 0.5)
    with pytest.raises(ValueError, match="expected key=value"):
        parse_override("k10")
    with pytest.raises(ValueError, match="unknown config key 'kk'"):
        parse_override("kk=1")
    with pytest.raises(ValueError, match="k=0"):
        parse_override("k=0")
