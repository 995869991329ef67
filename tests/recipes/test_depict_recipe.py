"""Recipe depict at tiny settings: the table's rows, their numbers against the metrics, the figure."""

import json

import pytest

pytest.importorskip("sklearn")

from divmin.recipes import run_recipe  # noqa: E402

from ._figures import check_figure  # noqa: E402


def test_depict_recipe_tiny(tmp_path):
    result = run_recipe("depict", tmp_path, overrides=(
        "seeds=(0,)", "channels=(4,)", "embed_dim=4", "pretrain_steps=3", "update_interval=2",
        "engine.max_steps=6", "batch_size=64"))
    methods = [r["method"] for r in result.rows]
    assert methods == ["depict-dec", "depict-paper", "kmeans-embedding", "kmeans-pixels"]
    for r in result.rows:
        assert 0.1 <= r["acc"] <= 1 and -0.1 <= r["ari"] <= 1 and 0 <= r["nmi"] <= 1
        assert r["acc_std"] == 0.0
    pixels = next(r for r in result.rows if r["method"] == "kmeans-pixels")
    assert pixels["acc"] > 0.6  # k-means on digits pixels is far above chance (0.1)
    assert result.summary["depict_beats_kmeans_pixels"] == (
        max(result.summary["acc"]["depict-dec"], result.summary["acc"]["depict-paper"]) > pixels["acc"])
    record = check_figure(result.plots[0])
    confusion = record["data"]["confusion"]
    assert sum(map(sum, confusion)) == 1797
    assert sum(confusion[i][i] for i in range(10)) / 1797 == pytest.approx(result.rows[0]["acc"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"][0]["method"] == "depict-dec"
