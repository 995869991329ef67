"""divmin train weat: a digits classifier trained with WEAT at the tiny defaults, export and reload."""

import pytest
import torch

from divmin.data import load_digits_images
from divmin.robust import WEATTrainConfig
from divmin.train import config_from, print_config, train

from ._export_check import assert_export_reloads


def test_train_export_reload_same_logits(tmp_path):
    cfg = config_from("weat", None, ["weat.engine.progress=False", "weat.engine.tensorboard=False"])
    run = train("weat", cfg, tmp_path / "run")
    assert {p.name for p in run.files} == {"config.json", "model.safetensors"}
    x, _ = load_digits_images()
    net = assert_export_reloads(run.model, tmp_path / "run", lambda m: m(x[:256].flatten(1)))
    # the held-out accuracy, recomputed from the reloaded classifier, is the trainer's evaluation
    held_out = run.trainer.eval_dataset.tensors
    with torch.no_grad():
        acc = (net(held_out[0]).argmax(1) == held_out[1]).float().mean().item()
    metrics = run.trainer.evaluate()
    assert acc == pytest.approx(metrics["clean_acc"], abs=1e-6)
    assert acc > 0.85 and metrics["pgd_acc"] < acc  # trained well above chance (0.1); attacks cost accuracy
    assert len(held_out[1]) == 449 and len(run.trainer.train_dataset) == 1797 - 449  # test_fraction 0.25


def test_config_nests_the_method():
    text = print_config("weat")
    assert "\nweat:\n" in text and "\n  objective: weat\n" in text and "\nwidth: 128\n" in text
    with pytest.raises(ValueError, match="`test_fraction`"):
        WEATTrainConfig(test_fraction=1.0)
    cfg = config_from("weat", None, ["weat.objective=trades", "weat.lr=0.01"])
    assert (cfg.weat.objective, cfg.weat.lr) == ("trades", 0.01)
