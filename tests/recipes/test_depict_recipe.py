"""Recipe depict at tiny settings: the table's rows, their numbers against the metrics, the figures."""

import json

import numpy as np
import pytest

pytest.importorskip("sklearn")

import torch  # noqa: E402

from divmin.data import fashion_mnist, find_fashion_mnist  # noqa: E402
from divmin.recipes import run_recipe  # noqa: E402

from ._figures import check_figure  # noqa: E402


def test_depict_recipe_tiny(tmp_path, capsys):
    result = run_recipe("depict", tmp_path, overrides=(
        "seeds=(0, 1)", "depict.channels=(4,)", "depict.embed_dim=4", "depict.pretrain_steps=3",
        "depict.update_interval=2", "depict.engine.max_steps=4", "depict.batch_size=64"))
    progress = capsys.readouterr().err  # one line per stage, with the CPU seconds spent
    assert "seed 1: pretraining the autoencoder on 1797 images" in progress and "CPU s]" in progress
    methods = [r["method"] for r in result.rows]
    assert methods == ["depict-dec", "depict-paper", "dec", "kmeans-embedding", "kmeans-pixels"]
    for r in result.rows:
        assert 0.1 <= r["acc"] <= 1 and -0.1 <= r["ari"] <= 1 and 0 <= r["nmi"] <= 1
        assert len(r["acc_per_seed"]) == 2
        assert r["acc"] == pytest.approx(np.mean(r["acc_per_seed"]), abs=1e-4)
        assert r["acc_std"] == pytest.approx(np.std(r["acc_per_seed"], ddof=1), abs=1e-4)
    by = {r["method"]: r for r in result.rows}
    assert by["kmeans-pixels"]["acc"] > 0.6  # k-means on digits pixels is far above chance (0.1)
    margin = by["depict-dec"]["acc"] - by["kmeans-pixels"]["acc"]
    assert result.summary["margin_over_kmeans_pixels"]["depict-dec"] == pytest.approx(margin)
    assert result.summary["depict_beats_kmeans_pixels"] == (margin > 0)
    spread = max(by["depict-dec"]["acc_std"], by["kmeans-pixels"]["acc_std"])
    want = "win" if margin > spread else "loss" if margin < -spread else "tie"
    assert result.summary["depict_vs_kmeans_pixels"] == want
    assert result.summary["depict_beats_dec"] == (by["depict-dec"]["acc"] > by["dec"]["acc"])
    wins = sum(a > b for a, b in zip(by["dec"]["acc_per_seed"], by["kmeans-pixels"]["acc_per_seed"]))
    assert result.summary["seeds_won_over_kmeans_pixels"]["dec"] == wins
    accuracy = check_figure(result.plots[0])
    assert [t.split(":")[0] for t in accuracy["legend"][1:]] == methods  # one entry per method after "one seed"
    for r in result.rows:  # the figure shows every seed's accuracy and the mean +- sd of the table
        assert accuracy["data"]["acc_per_seed"][r["method"]] == r["acc_per_seed"]
        assert accuracy["data"]["acc"][r["method"]] == pytest.approx(r["acc"])
        assert accuracy["data"]["acc_std"][r["method"]] == pytest.approx(r["acc_std"])
    assert result.summary["images"] == 1797 and "cpu_seconds" not in result.summary  # not reproducible
    assert json.loads((tmp_path / "timing.json").read_text())["cpu_s"] > 0
    confusion = check_figure(result.plots[1])["data"]["confusion"]
    assert sum(map(sum, confusion)) == 1797
    assert sum(confusion[i][i] for i in range(10)) / 1797 == pytest.approx(by["depict-dec"]["acc_per_seed"][0],
                                                                           abs=1e-4)
    embedding = check_figure(result.plots[2])
    assert len(embedding["legend"]) == 10
    for panel in embedding["data"].values():
        assert len(panel["class_means"]) == 10 and 0 < sum(panel["explained_variance_ratio"]) <= 1 + 1e-9
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"][0]["method"] == "depict-dec"


def test_full_preset_and_clustering_path_are_per_dataset_and_leave_explicit_settings():
    from divmin.engine import parse_overrides
    from divmin.recipes.depict import FULL_SIZES, DepictRecipeConfig, _dataset_defaults

    plain = _dataset_defaults(DepictRecipeConfig())  # without --full only the dataset's path is applied
    assert plain == DepictRecipeConfig() and plain.depict.clustering_path == "noisy"
    fashion = _dataset_defaults(parse_overrides(DepictRecipeConfig(), ("full=True", "dataset=fashion-mnist")))
    want = FULL_SIZES["fashion-mnist"]
    assert fashion.max_samples is None and len(fashion.seeds) >= 3 and fashion.seeds == want["seeds"]
    assert (fashion.depict.pretrain_steps, fashion.depict.engine.max_steps, fashion.depict.update_interval) == (
        want["depict.pretrain_steps"], want["depict.engine.max_steps"], want["depict.update_interval"])
    assert fashion.depict.clustering_path == "clean"
    digits = _dataset_defaults(parse_overrides(DepictRecipeConfig(), ("full=True", "depict.pretrain_steps=7")))
    assert digits.depict.pretrain_steps == 7
    assert digits.depict.engine.max_steps == FULL_SIZES["digits"]["depict.engine.max_steps"]
    assert len(digits.seeds) >= 5
    with pytest.raises(ValueError, match="`depict.target` is set by the recipe"):
        parse_overrides(DepictRecipeConfig(), ("depict.target=paper",))


@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST IDX files are not installed")
def test_fashion_mnist_is_train_then_test():
    from divmin.recipes.depict import DepictRecipeConfig, _load

    x, y = _load(DepictRecipeConfig(dataset="fashion-mnist"))
    assert x.shape == (70000, 1, 28, 28) and np.bincount(y).tolist() == [7000] * 10
    test_x, _ = fashion_mnist("test")
    assert torch.equal(x[60000:], test_x)
    assert _load(DepictRecipeConfig(dataset="fashion-mnist", max_samples=50))[0].shape[0] == 50
