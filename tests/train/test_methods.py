"""Methods register themselves next to their code: a method in a package of its own is found and run by
`divmin train` (nothing of divmin.train touched), and every train config nests its method's config."""

import dataclasses
import sys
import textwrap

import pytest
import torch

import divmin
from divmin.cli import main
from divmin.engine import METHODS, EngineConfig, get_method, load_exported
from divmin.engine._export import BUILDERS
from divmin.train import available_methods, print_config

# a whole method, as a new package of divmin would hold it: its config, a task, a thin trainer, its registration
_METHOD = '''
import dataclasses

import torch
from torch import nn

from divmin.engine import EngineConfig, Instance, MethodTrainer, Models, Number, TrainMethod, validate
from divmin.engine import export_module, exportable_module, train_method


@dataclasses.dataclass
class MeanConfig:
    lr: float = 0.1  # SGD step size
    engine: EngineConfig = dataclasses.field(default_factory=lambda: EngineConfig(max_steps=3, log_every=1, max_grad_norm=None))  # loop

    CHECKS = dict(lr=Number(gt=0), engine=Instance(EngineConfig))

    def __post_init__(self):
        validate(self)


@dataclasses.dataclass
class MeanTrainConfig:
    target: float = 2.0  # the value the weight is pulled to
    zzmean: MeanConfig = dataclasses.field(default_factory=MeanConfig)  # the method's own config

    CHECKS = dict(target=Number(), zzmean=Instance(MeanConfig))

    def __post_init__(self):
        validate(self)


@exportable_module("zz_scalar")
def scalar():
    return nn.Linear(1, 1, bias=False)


class _Task:
    def __init__(self, model, target, lr):
        self.model, self.target, self.lr = model, target, lr

    def models(self):
        return {"model": self.model}

    def optimizers(self, models):
        return {"model": torch.optim.SGD(models["model"].parameters(), lr=self.lr)}

    def train_step(self, batch, ctx):
        return (self.model.weight - self.target).pow(2).sum()


class MeanTrainer(MethodTrainer):
    trained_models = {"model": "model"}

    def __init__(self, model, target, *, config):
        self.model, self.target = model, target
        self.use_config(config, MeanConfig)

    def make_task(self):
        return _Task(self.model, self.target, self.config.lr)


@train_method("zzmean", MeanTrainConfig, "pull a weight to a target (a test's throwaway method)")
class ZZMean(TrainMethod):
    checkpoint_model = "model"

    def models(self, config, training):
        torch.manual_seed(0)
        return Models(scalar())

    def trainer(self, config, models):
        return MeanTrainer(models.model, config.target, config=config.zzmean)

    def export(self, model, models, config, run_dir):
        return export_module(model, "zz_scalar", {}, run_dir)
'''


@pytest.fixture
def new_package(tmp_path):
    """``divmin.zzmean`` (a package with a ``_method`` module) and ``divmin.zznomethod`` (none, and failing on
    import) in a directory of divmin's package path; removed afterwards."""
    pkg = tmp_path / "zzmean"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")  # the package need not import its method module: discovery does
    (pkg / "_method.py").write_text(textwrap.dedent(_METHOD))
    (tmp_path / "zznomethod").mkdir()
    (tmp_path / "zznomethod" / "__init__.py").write_text("raise RuntimeError('imported by discovery')\n")
    divmin.__path__.append(str(tmp_path))
    yield pkg
    divmin.__path__.remove(str(tmp_path))
    METHODS.discard("zzmean")
    BUILDERS.discard("zz_scalar")
    for name in [m for m in sys.modules if m.startswith(("divmin.zzmean", "divmin.zznomethod"))]:
        del sys.modules[name]


def test_a_method_in_its_own_package_is_found_run_exported_and_resumed(new_package, tmp_path, capsys):
    assert "divmin.zzmean" not in sys.modules and "zzmean" not in METHODS
    assert get_method("zzmean").summary.startswith("pull a weight")  # discovery imported the package
    assert "divmin.zznomethod" not in sys.modules  # a package without a method module is left alone
    assert main(["train", "list"]) == 0 and "zzmean" in capsys.readouterr().out
    out = tmp_path / "run"
    sets = ["--set", "target=-1.0", "--set", "zzmean.engine.progress=False", "--set", "zzmean.engine.tensorboard=False"]
    assert main(["train", "zzmean", "--out", str(out), *sets]) == 0
    assert (out / "train_config.yaml").read_text().startswith("method: zzmean\n")
    w3 = load_exported(out / "final").weight.item()
    torch.manual_seed(0)
    start = torch.nn.Linear(1, 1, bias=False).weight.item()
    assert w3 == pytest.approx(-1 + (start + 1) * 0.8 ** 3, rel=1e-5)  # 3 SGD steps on (w + 1)^2, lr 0.1
    capsys.readouterr()
    assert main(["train", "zzmean", "--out", str(out), "--resume", "--set", "zzmean.engine.max_steps=5"]) == 0
    assert load_exported(out / "final").weight.item() == pytest.approx(-1 + (start + 1) * 0.8 ** 5, rel=1e-5)
    (out / "final" / "model.safetensors").unlink()
    assert main(["export", str(out)]) == 0
    assert load_exported(out / "final").weight.item() == pytest.approx(-1 + (start + 1) * 0.8 ** 5, rel=1e-5)


@pytest.mark.parametrize("method", available_methods())
def test_the_train_config_nests_the_method_config_and_declares_none_of_its_fields(method):
    cls = get_method(method).config_cls
    config = cls()
    nested = getattr(config, method)  # the method's own config, under the method's name
    assert dataclasses.is_dataclass(nested) and isinstance(nested.engine, EngineConfig)
    assert not issubclass(cls, type(nested))  # composed by nesting, not inheritance
    mine = {f.name for f in dataclasses.fields(cls)}
    assert not mine & {f.name for f in dataclasses.fields(nested)}, mine & {f.name for f in dataclasses.fields(nested)}
    assert "engine" not in mine


def test_print_config_shows_the_nested_layout():
    import yaml

    text = print_config("kd")
    tree = yaml.safe_load(text)
    assert set(tree["kd"]) >= {"divergence", "temperature", "lr", "engine"} and tree["kd"]["engine"]["max_steps"] == 100
    assert not {"divergence", "lr", "engine"} & set(tree) and tree["model"] is None
    assert "(kd.engine.max_steps=10)" in text.splitlines()[2]


def test_fdistill_runs_are_reproducible(tmp_path):
    """The f-distill trainer's discriminator was built from the unseeded global RNG: two runs differed."""
    from safetensors.torch import load_file

    from divmin.train import config_from, train

    sets = ["fdistill.engine.max_steps=2", "fdistill.batch_size=16", "fdistill.eval_samples=32", "hidden=8",
            "fdistill.engine.progress=False", "fdistill.engine.tensorboard=False"]
    for name in ("a", "b"):
        torch.manual_seed(len(name) * 1000 + ord(name))  # a different global RNG state before each run
        train("fdistill", config_from("fdistill", None, sets), tmp_path / name)
    a, b = (load_file(tmp_path / n / "final" / "model.safetensors") for n in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
