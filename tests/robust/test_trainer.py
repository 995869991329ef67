"""RobustTrainer on the engine: every objective learns a separable toy; config checks name the field."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from divmin.engine import EngineConfig
from divmin.robust import AttackSettings, RobustTrainer, WEATConfig

from .._resume import assert_resumes_exactly


def _blobs(n: int = 256, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.tensor([[0.2, 0.2, 0.5, 0.5], [0.8, 0.3, 0.5, 0.5], [0.5, 0.8, 0.5, 0.5]])
    x = (centres[y] + 0.06 * torch.randn(n, 4, generator=g)).clamp(0, 1)
    return TensorDataset(x, y)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))


@pytest.mark.parametrize("objective", ["standard", "pgd-at", "trades", "weat"])
def test_each_objective_trains_on_the_engine(objective):
    config = WEATConfig(objective=objective, attack=AttackSettings(eps=0.05, steps=3, beta=1.0), lr=1e-2,
                        batch_size=64, eval_steps=5, engine=EngineConfig(max_steps=40, log_every=10, seed=0))
    trainer = RobustTrainer(_net(), _blobs(), eval_dataset=_blobs(seed=1), config=config)
    before = trainer.evaluate()
    result = trainer.fit()
    after = trainer.evaluate()
    assert before["clean_acc"] < 0.7 and after["clean_acc"] > 0.9
    assert after["pgd_acc"] <= after["clean_acc"]
    assert set(result.optimizer_steps) == {"classifier"} and result.optimizer_steps["classifier"] == 40
    assert "eval/pgd_acc" in result.metrics and "energy_natural" in result.metrics
    if objective != "standard":
        assert "energy_adv" in result.metrics


@pytest.mark.parametrize("kw, name", [(dict(eps=-1.0), "eps"), (dict(steps=0), "steps"),
                                      (dict(divergence="nope"), "divergence"),
                                      (dict(bounds=(1.0, 0.0)), "bounds"), (dict(norm="l1"), "norm"),
                                      (dict(weat_normalize=1), "weat_normalize")])
def test_config_errors_name_the_field(kw, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        WEATConfig(attack=AttackSettings(**kw))


def test_weat_config_nests_the_attack_settings():
    with pytest.raises(ValueError, match="`objective`"):
        WEATConfig(objective="mart")
    with pytest.raises(TypeError, match="`attack`"):
        WEATConfig(attack={"eps": 0.1})
    with pytest.raises(ValueError, match="`attack.generator`"):
        WEATConfig(attack=AttackSettings(generator=torch.Generator()))
    assert WEATConfig().attack == AttackSettings()  # the former RobustConfig's defaults: eps 8/255, 10 steps, ...
    assert WEATConfig().attack.eps == 8 / 255 and WEATConfig().attack.steps == 10


def test_robust_config_is_a_deprecated_alias():
    import divmin.robust as robust

    with pytest.warns(DeprecationWarning, match="RobustConfig"):
        assert robust.RobustConfig is WEATConfig


def test_trainer_refuses_bad_arguments():
    with pytest.raises(TypeError, match="`model`"):
        RobustTrainer(lambda x: x, _blobs())
    with pytest.raises(ValueError, match="`train_dataset`"):
        RobustTrainer(_net(), [])


def test_weat_training_resumes_exactly_and_seeds_the_attacks(tmp_path):
    def run(out, steps, resume=False, seed=0):
        engine = EngineConfig(max_steps=steps, log_every=1, progress=False, tensorboard=False, max_grad_norm=None,
                              out_dir=str(out), checkpoint_every=2, seed=seed)
        cfg = WEATConfig(objective="weat", attack=AttackSettings(eps=0.1, steps=2), lr=1e-2, batch_size=32,
                         engine=engine)
        torch.manual_seed(0)
        tr = RobustTrainer(_net(), _blobs(64), config=cfg)
        result = tr.fit(resume=resume)
        return tr.model, result

    full = assert_resumes_exactly(run, tmp_path)
    other, _ = run(tmp_path / "other", 4, seed=1)  # another seed: other data order and attack starts
    assert not torch.allclose(other[0].weight, full[0].weight)
