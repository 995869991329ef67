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


def _all_method_trainers() -> list[type]:
    from divmin.cluster import DepictTrainer
    from divmin.diffusion import DiDiTrainer, MDLMTrainer
    from divmin.lm import JudgeTrainer
    from divmin.robust import RobustTrainer
    from divmin.speech import SpeechToEGGTrainer

    return TRAINERS + [DiDiTrainer, MDLMTrainer, JudgeTrainer, RobustTrainer, SpeechToEGGTrainer, DepictTrainer]


@pytest.mark.parametrize("cls", _all_method_trainers(), ids=lambda c: c.__name__)
def test_every_trainer_takes_config_by_keyword_and_is_named_a_trainer(cls):
    assert cls.__name__.endswith("Trainer") and issubclass(cls, MethodTrainer)
    param = inspect.signature(cls.__init__).parameters["config"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("module, old, new", [("divmin.diffusion", "FDistill", "FDistillTrainer"),
                                              ("divmin.speech", "SpeechToEGG", "SpeechToEGGTrainer"),
                                              ("divmin.robust", "RobustConfig", "WEATConfig")])
def test_former_names_warn_and_are_the_same_class(module, old, new):
    import importlib

    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"`{module}\.{old}` is deprecated.*use `{new}`"):
        assert getattr(mod, old) is getattr(mod, new)
    assert old not in mod.__all__ and new in mod.__all__
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(mod, "no_such_name")


def test_deprecated_aliases_refuses_a_non_name():
    from divmin.engine import deprecated_aliases

    with pytest.raises(TypeError, match="`Old`"):
        deprecated_aliases({"__name__": "m"}, Old=3)


def _points_to(value, trainer) -> bool:
    """Whether ``value`` is ``trainer``, a method bound to it, or holds one (containers, partials)."""
    import functools

    if value is trainer or getattr(value, "__self__", None) is trainer:
        return True
    if isinstance(value, functools.partial):
        return any(_points_to(v, trainer) for v in (value.func, *value.args, *value.keywords.values()))
    if isinstance(value, dict):
        return any(_points_to(v, trainer) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_points_to(v, trainer) for v in value)
    return False


def _cheap_trainers() -> list:
    from divmin.cluster import DepictConfig, DepictTrainer
    from divmin.data import MarkovLanguage
    from divmin.diffusion import DiDiTrainer, MaskedDiffusionLM, MDLMTrainer, MDLMTransformer
    from divmin.lm import JudgeTrainer, tiny_judge
    from divmin.robust import RobustTrainer
    from divmin.speech import SpeechToEGGConfig, SpeechToEGGTrainer

    lm = MaskedDiffusionLM(MDLMTransformer(4, 5, width=8, depth=1, heads=2), 4, 5)
    blobs = torch.utils.data.TensorDataset(torch.rand(8, 4), torch.arange(8) % 3)
    return [_fdistill(), MDLMTrainer(lm, MarkovLanguage(4, 5, seed=0).sample), DiDiTrainer(teacher=lm),
            JudgeTrainer(tiny_judge(4, 5, n_layer=1, n_embd=8), torch.zeros(3, 5, dtype=torch.long)),
            RobustTrainer(torch.nn.Linear(4, 3), blobs), DepictTrainer(torch.rand(8, 1, 8, 8),
                                                                       config=DepictConfig(n_clusters=2)),
            SpeechToEGGTrainer(torch.randn(400), torch.randn(400),
                               config=SpeechToEGGConfig(frame_len=32, hop=8, hidden=4, layers=2, decoder_layers=1))]


def test_no_task_holds_its_trainer():
    """No back-pointer (the pattern of engine._method): nothing a task holds is its trainer or bound to it."""
    for trainer in _cheap_trainers():
        task = trainer.make_task()
        assert not any(_points_to(v, trainer) for v in vars(task).values()), type(trainer).__name__
