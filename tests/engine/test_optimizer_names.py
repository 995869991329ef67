"""The optimizer naming rule: an identifier naming the model or role it updates, never the algorithm."""

from __future__ import annotations

import inspect
import re
import sys

import pytest
import torch
from engine_toys import RegressionTask, quiet_config

from divmin.engine import CrossEntropyTask, Trainer


class _Named(RegressionTask):
    def __init__(self, name: str, algorithm=torch.optim.Adam) -> None:
        super().__init__(stochastic=False)
        self.name, self.algorithm = name, algorithm

    def optimizers(self, models):
        return {self.name: self.algorithm(models["net"].parameters(), lr=1e-2)}


@pytest.mark.parametrize("name,algorithm", [
    ("adam", torch.optim.Adam), ("Adam", torch.optim.Adam), ("adamw", torch.optim.Adam),
    ("sgd", torch.optim.AdamW), ("rmsprop", torch.optim.SGD),  # any algorithm's name, not only its own
    ("policy net", torch.optim.Adam), ("1net", torch.optim.Adam), ("lr/net", torch.optim.Adam),
    ("net.0", torch.optim.Adam), ("net-a", torch.optim.Adam), ("", torch.optim.Adam),
])
def test_an_invalid_optimizer_name_is_refused(name, algorithm):
    with pytest.raises(ValueError, match=r"is not allowed; name an optimizer after the model or role it updates"):
        Trainer(_Named(name, algorithm), quiet_config(max_steps=1)).fit()


@pytest.mark.parametrize("name", ["net", "student", "critic_2", "_private"])
def test_a_role_name_is_accepted(name):
    result = Trainer(_Named(name), quiet_config(max_steps=1)).fit()
    assert result.optimizer_steps == {name: 1}


def test_method_and_recipe_optimizers_follow_the_rule():
    """Every optimizer the package builds is named after a model or role (checked by name here)."""
    import divmin.recipes.fdistill_images as images
    import divmin.recipes.fdpg_toy as fdpg_toy
    import divmin.recipes.fdpo_bandit as bandit
    import divmin.recipes.fit as fit
    import divmin.recipes.tiny_lm as tiny
    from divmin.align import FDPGTrainer, FDPOTrainer
    from divmin.cluster import DepictTrainer
    from divmin.diffusion import DiDiTrainer, FDistillTrainer, MDLMTrainer, train_denoiser
    from divmin.distill import DistillTrainer
    from divmin.robust import RobustTrainer

    methods = [sys.modules[obj.__module__] for obj in (FDPGTrainer, FDPOTrainer, train_denoiser, FDistillTrainer,
                                                       DistillTrainer, MDLMTrainer, RobustTrainer, DepictTrainer, DiDiTrainer)]
    for module in (*methods, fdpg_toy, bandit, fit):
        names = re.findall(r'"(\w+)": (?:torch\.optim\.\w+|trainable_adamw)\(', inspect.getsource(module))
        assert names, module.__name__
        assert not {n.lower() for n in names} & {"adam", "adamw", "sgd", "opt", "optimizer"}, (module.__name__, names)
    # the supervised task names its optimizer after its model: the default and every name a recipe passes
    assert inspect.signature(CrossEntropyTask).parameters["name"].default == "model"
    for module in (tiny, images):
        names = re.findall(r'CrossEntropyTask\(.*?name="(\w+)"', inspect.getsource(module), flags=re.S)
        assert names, module.__name__
        assert not {n.lower() for n in names} & {"adam", "adamw", "sgd", "opt", "optimizer"}, (module.__name__, names)


def test_a_custom_algorithm_name_is_refused_too():
    class Lion(torch.optim.SGD):
        pass

    with pytest.raises(ValueError, match=r"not after its algorithm \(Lion\)"):
        Trainer(_Named("lion", Lion), quiet_config(max_steps=1)).fit()
