"""divmin train depict: clustering digits at the tiny defaults, export and reload of the clustering network."""

import subprocess
import sys

import pytest
import torch

from divmin.cluster import DEPICTTrainConfig, DepictNet
from divmin.data import load_digits_images
from divmin.eval import clustering_accuracy
from divmin.train import config_from, print_config, train

from ._export_check import assert_export_reloads


def test_train_export_reload_same_clusters(tmp_path):
    cfg = config_from("depict", None, ["depict.engine.progress=False", "depict.engine.tensorboard=False"])
    run = train("depict", cfg, tmp_path / "run")
    assert {p.name for p in run.files} == {"config.json", "model.safetensors"}
    x, y = load_digits_images()
    net = assert_export_reloads(run.model, tmp_path / "run", lambda m: m.clean(x[:256])[1])
    assert isinstance(net, DepictNet)
    with torch.no_grad():
        clusters = net.clean(x)[1].argmax(1)
    assert torch.equal(clusters, run.trainer.predict())
    # the tiny default clusters digits far above chance (0.1): 0.65 at seed 0, k-means on pixels ~0.79
    assert clustering_accuracy(y.numpy(), clusters.numpy()) > 0.5


def test_load_exported_alone_finds_the_builder(tmp_path):
    """A fresh process importing only divmin.engine rebuilds the network (discovery registers its builder)."""
    net = DepictNet((1, 8, 8), n_clusters=3, channels=(4,), embed_dim=2)
    from divmin.engine import export_module

    export_module(net, "depict_net", {"in_shape": [1, 8, 8], "n_clusters": 3, "channels": [4], "embed_dim": 2,
                                      "noise": 0.1, "head": "softmax"}, tmp_path)
    code = ("import sys, torch; from divmin.engine import load_exported; "
            "print(float(load_exported(sys.argv[1]).clean(torch.ones(1, 1, 8, 8))[1].sum()))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "final")], capture_output=True, text=True,
                         check=True).stdout
    with torch.no_grad():
        assert float(out) == pytest.approx(float(net.clean(torch.ones(1, 1, 8, 8))[1].sum()), rel=1e-6)


def test_config_nests_the_method_and_checks_the_data():
    text = print_config("depict")
    assert "\ndata: null\n" in text and "\ndepict:\n  # K, number of clusters" in text
    with pytest.raises(ValueError, match="`data` must be one of 'digits', 'fashion-mnist'"):
        DEPICTTrainConfig(data="mnist")
    with pytest.raises(ValueError, match="`depict.n_clusters`|n_clusters"):
        config_from("depict", None, ["depict.n_clusters=1"])
