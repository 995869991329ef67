"""`MethodTrainer`: the same verbs on every method trainer (``fit(resume) -> TrainResult``, ``engine``)."""

from __future__ import annotations

import dataclasses
import inspect
import warnings

import pytest
import torch
from engine_toys import RegressionTask, quiet_config

from divmin.align import FDPGTrainer, FDPOTrainer
from divmin.diffusion import EDMDenoiser, FDistillTrainer, FDistillConfig, GaussianMixtureTeacher, MLPBackbone, MLPGenerator
from divmin.distill import DistillTrainer
from divmin.engine import EngineConfig, MethodTrainer, Trainer, TrainResult

TRAINERS = [FDPOTrainer, FDPGTrainer, DistillTrainer, FDistillTrainer]


@pytest.mark.parametrize("cls", TRAINERS, ids=lambda c: c.__name__)
def test_every_method_trainer_has_the_same_verbs(cls):
    assert issubclass(cls, MethodTrainer) and cls.fit is MethodTrainer.fit and cls.train is MethodTrainer.train
    params = inspect.signature(cls.fit).parameters
    assert list(params) == ["self", "resume"] and params["resume"].default is False
    assert cls.engine is None  # set by fit()
    assert cls.trained_models and not hasattr(cls, "trainer")


@dataclasses.dataclass
class _Config:
    engine: EngineConfig


class _Evaluated(RegressionTask):
    def evaluate(self, ctx):
        return {"calls": 1.0}


class _Toy(MethodTrainer):
    trained_models = {"net": "net"}

    def __init__(self, config, evaluates=False):
        self.use_config(config, _Config)
        self._evaluates, self.net = evaluates, None

    def make_task(self):
        return _Evaluated(stochastic=False)

    def evaluates(self):
        return self._evaluates


def test_fit_builds_the_engine_writes_models_back_and_evaluates_once_at_the_end():
    toy = _Toy(_Config(quiet_config(max_steps=4)), evaluates=True)
    result = toy.fit()
    assert isinstance(result, TrainResult) and isinstance(toy.engine, Trainer)
    assert toy.net is toy.engine.models["net"]
    assert [h["step"] for h in result.history if "eval/calls" in h] == [4]
    assert toy.config.engine.eval_every is None  # the config itself is left as given


def test_no_evaluation_unless_asked():
    result = _Toy(_Config(quiet_config(max_steps=3))).fit()
    assert not any("eval/calls" in h for h in result.history)
    result = _Toy(_Config(quiet_config(max_steps=4, eval_every=2)), evaluates=True).fit()
    assert [h["step"] for h in result.history if "eval/calls" in h] == [2, 4]


def test_use_config_defaults_and_refuses_another_type():
    with pytest.raises(TypeError, match="`config` must be a _Config, got dict"):
        _Toy({})


def _fdistill() -> FDistillTrainer:
    teacher = GaussianMixtureTeacher(torch.zeros(1, 2), 1.0)
    return FDistillTrainer(MLPGenerator(2, 8, 1), teacher, EDMDenoiser(MLPBackbone(2, 8, 1)),
                    config=FDistillConfig(engine=quiet_config(max_steps=1)), sample_shape=(2,))


def test_train_is_a_deprecated_alias_of_fit(monkeypatch):
    fd = _fdistill()
    monkeypatch.setattr(FDistillTrainer, "fit", lambda self, resume=False: ("fitted", resume))
    with pytest.warns(DeprecationWarning, match=r"FDistillTrainer.train\(\) is deprecated; use FDistillTrainer.fit\(\)"):
        assert fd.train(resume=True) == ("fitted", True)


def test_the_alias_never_shadows_nn_module_train():
    class _ModuleTrainer(MethodTrainer, torch.nn.Module):
        pass

    m = _ModuleTrainer()
    torch.nn.Module.__init__(m)
    assert _ModuleTrainer.train is torch.nn.Module.train
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert m.train(False) is m and not m.training  # nn.Module's verb, no warning


def test_fdistill_fit_replaces_the_modules():
    fd = _fdistill()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        result = fd.fit()
    assert result.optimizer_steps == {"generator": 1, "critic": 4}
    for name in ("generator", "fake_score", "discriminator", "generator_ema"):
        assert getattr(fd, name) is fd.engine.models[name]
