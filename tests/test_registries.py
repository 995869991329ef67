"""Every name -> object table of divmin is a `divmin.registry.Registry`: an unknown name raises a
ValueError that names it and lists the valid ones, and the functions taking such a name say which
argument held it."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from divmin import cluster, data, diffusion, distill, robust
from divmin.distill._cache_io import encode
from divmin.distill._sinkd import SINKD_MODES
from divmin.registry import Registry

weat = importlib.import_module("divmin.recipes.weat")  # the modules, not the recipes' functions of that name
depict = importlib.import_module("divmin.recipes.depict")

# (registry, its valid names): the names are spelled out here, so that a renamed or lost entry fails
TABLES = {
    "robust.OBJECTIVES": (robust.OBJECTIVES, {"standard", "pgd-at", "trades", "weat"}),
    "robust.NORMS": (robust.NORMS, {"linf", "l2"}),
    "robust.ATTACK_STARTS": (robust.ATTACK_STARTS, {"uniform", "gaussian", "none"}),
    "robust.SGLD_INITS": (robust.SGLD_INITS, {"gaussian", "pca"}),
    "distill.DISTILL_TASKS": (distill.DISTILL_TASKS, {"causal_lm", "sequence_classification"}),
    "distill.ENCODINGS": (distill.ENCODINGS, {"float32", "float16", "int8"}),
    "diffusion.SIGMA_SAMPLERS": (diffusion.SIGMA_SAMPLERS, {"log_uniform", "edm_lognormal"}),
    "diffusion.TIME_WEIGHTS": (diffusion.TIME_WEIGHTS, {"sigma2", "none"}),
    "data.TEXT_SPLITS": (data.TEXT_SPLITS, {"lines", "paragraphs", "whole"}),
    "cluster.HEADS": (cluster.HEADS, {"softmax", "student_t"}),
    "cluster.TARGET_RULES": (cluster.TARGET_RULES, {"paper", "dec"}),
    "recipes.weat.DATASETS": (weat.DATASETS, {"digits", "fashion-mnist"}),
    "recipes.depict.DATASETS": (depict.DATASETS, {"digits", "fashion-mnist"}),
    "distill SINKD_MODES": (SINKD_MODES, {"reference", "log"}),
}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_unknown_name_lists_the_valid_ones(table):
    registry, valid = TABLES[table]
    assert isinstance(registry, Registry)
    assert set(registry) == valid and all(name in registry for name in valid) and len(registry) == len(valid)
    with pytest.raises(ValueError) as err:
        registry.get("no-such-name")
    message = str(err.value)
    assert "'no-such-name'" in message and all(name in message.split("available:")[1] for name in valid)


def _x():
    return torch.full((2, 3), 0.5)


# (call with the bad name, the argument named in the error, the valid names it must list)
CALLS = {
    "robust_loss": (lambda bad: robust.robust_loss(nn.Linear(3, 2), _x(), torch.tensor([0, 1]), objective=bad),
                    "objective", ["pgd-at", "standard", "trades", "weat"]),
    "pgd_attack norm": (lambda bad: robust.pgd_attack(nn.Linear(3, 2), _x(), torch.tensor([0, 1]), eps=0.1, norm=bad),
                        "norm", ["l2", "linf"]),
    "pgd_attack start": (lambda bad: robust.pgd_attack(nn.Linear(3, 2), _x(), torch.tensor([0, 1]), eps=0.1,
                                                       start=bad), "start", ["gaussian", "none", "uniform"]),
    "read_documents": (lambda bad: data.read_documents(["a"], split=bad), "split", ["lines", "paragraphs", "whole"]),
    "cache encode": (lambda bad: encode(torch.zeros(1, 2), bad), "dtype", ["float16", "float32", "int8"]),
    "DepictNet": (lambda bad: cluster.DepictNet((1, 8, 8), n_clusters=2, head=bad), "head", ["softmax", "student_t"]),
    "sinkd_loss": (lambda bad: distill.sinkd_loss(torch.zeros(2, 3), torch.zeros(2, 3), mode=bad), "mode",
                   ["log", "reference"]),
    "auxiliary_target": (lambda bad: cluster.auxiliary_target(torch.full((2, 2), 0.5), rule=bad), "rule",
                         ["dec", "paper"]),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("bad", ["no-such-name", 3])
def test_functions_name_the_argument_and_the_valid_names(call, bad):
    fn, arg, valid = CALLS[call]
    with pytest.raises(ValueError) as err:
        fn(bad)
    message = str(err.value)
    assert message.startswith(f"`{arg}`:") and repr(bad) in message and message.endswith(", ".join(valid))


def test_a_mistyped_name_gets_a_suggestion():
    with pytest.raises(ValueError, match=r"`objective`: unknown objective 'trade' \(did you mean 'trades'\?\)"):
        robust.robust_loss(nn.Linear(3, 2), _x(), torch.tensor([0, 1]), objective="trade")


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_attack_starts_draw_the_documented_first_step(norm):
    """With a zero step size the attack stays at x + delta_0: the start alone, against its definition."""
    x, eps, std = torch.full((4, 5), 0.5), 0.1, 1e-3
    attack = dict(eps=eps, steps=1, step_size=0.0, norm=norm, bounds=None)

    def run(start):
        return robust.pgd_attack(nn.Linear(5, 2), x, torch.zeros(4, dtype=torch.long), start=start,
                                 init_std=std, generator=torch.Generator().manual_seed(0), **attack)

    assert torch.equal(run("none"), x)
    noise = std * torch.randn(4, 5, generator=torch.Generator().manual_seed(0))  # tiny: inside either ball
    torch.testing.assert_close(run("gaussian") - x, noise)
    uniform = run("uniform") - x
    if norm == "linf":  # uniform in the box: (2u - 1) eps from the same generator
        expected = (2 * torch.rand(4, 5, generator=torch.Generator().manual_seed(0)) - 1) * eps
        torch.testing.assert_close(uniform, expected)
    else:  # inside the L2 ball, not on a fixed radius
        radii = uniform.norm(dim=1)
        assert bool((radii <= eps + 1e-6).all()) and radii.std() > 0
