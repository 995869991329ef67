"""Recipe ``kd-sinkd`` at tiny settings: the low-overlap setting it claims, its table, summary and figure."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from divmin.recipes import run_recipe
from divmin.distill import DistillConfig
from divmin.recipes.kd_cls import MixtureSetting
from divmin.recipes.kd_sinkd import KDSinkdConfig, far_student, overlap

from ._figures import assert_close_lists, check_figure

TINY = ["kd.engine.progress=False", "kd.engine.tensorboard=False", "kd.engine.max_steps=30",
        "setting.teacher_steps=60", "seeds=(0, 1)", "setting.classes=20", "setting.teacher_examples=1000",
        "setting.transfer_examples=200", "setting.test_examples=300"]


def test_overlap_is_the_bhattacharyya_coefficient_in_float64():
    g = torch.Generator().manual_seed(0)
    s, t = 3 * torch.randn(5, 7, generator=g), 3 * torch.randn(5, 7, generator=g)
    p, q = (torch.softmax(v.double(), -1).numpy() for v in (s, t))
    assert overlap(s, t) == pytest.approx(float(np.sqrt(p * q).sum(-1).mean()), rel=1e-5)
    assert overlap(s, s) == pytest.approx(1.0, abs=1e-6)
    far = torch.full((1, 3), -200.0)
    assert overlap(far.index_fill(1, torch.tensor([0]), 200.0), far.index_fill(1, torch.tensor([2]), 200.0)) < 1e-30


def test_far_student_starts_peaked_on_one_class_for_every_input():
    c = KDSinkdConfig(setting=MixtureSetting(classes=50, dim=4))
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        probs = torch.softmax(far_student(c, 0)(x), -1)
        near = torch.softmax(far_student(dataclasses.replace(c, student_init_scale=0.0), 0)(x), -1)
    assert float(probs.amax(-1).mean()) > 0.9 and probs.argmax(-1).unique().numel() == 1
    assert float(near.amax(-1).mean()) < 0.2  # without the far start it begins near uniform


def test_kd_sinkd_recipe_smoke(tmp_path):
    result = run_recipe("kd-sinkd", tmp_path, TINY)
    assert [r["method"] for r in result.rows] == ["forward_kl", "reverse_kl", "js", "sinkd"]
    s = result.summary
    assert s["teacher_top_prob"] > 0.9 and s["start_overlap"] < 0.3  # the setting: peaked teacher, far student
    assert 0 < s["sinkd_loss_share"] < 1
    per = s["accuracy_per_seed"]
    for r in result.rows:
        assert r["accuracy"] == pytest.approx(np.mean(per[r["method"]]))
        assert r["accuracy sd"] == pytest.approx(np.std(per[r["method"]], ddof=1))
        assert 0 <= r["agreement"] <= 1 and r["KL(T||S)"] > 0
    assert s["ranking"] == sorted(s["accuracy"], key=s["accuracy"].get, reverse=True)
    for m in ("forward_kl", "reverse_kl", "js"):
        assert s["paper_ordering"][m] == all(a > b for a, b in zip(per["sinkd"], per[m]))
    timing = json.loads((tmp_path / "timing.json").read_text())["cpu_s"]
    assert list(timing) == [r["method"] for r in result.rows] and all(t > 0 for t in timing.values())
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["plots"] == [str(tmp_path / "kd_sinkd.png")]
    figure = check_figure(tmp_path / "kd_sinkd.png")
    for col in ("accuracy", "KL(T||S)"):  # the plotted numbers are the table's
        assert list(figure["data"][col]["bars"]) == [r["method"] for r in result.rows]
        assert_close_lists(list(figure["data"][col]["bars"].values()), [r[col] for r in result.rows])
        assert_close_lists(list(figure["data"][col]["errors"].values()), [r[f"{col} sd"] for r in result.rows])
    assert figure["data"]["accuracy"]["references"]["teacher"] == pytest.approx(s["teacher_accuracy"])


def _kd(**kw) -> DistillConfig:
    return DistillConfig(task="sequence_classification", **kw)


@pytest.mark.parametrize("kwargs, name", [(dict(teacher_temperature=0.0), "teacher_temperature"),
                                          (dict(methods=("nope",)), "methods"),
                                          (dict(kd=_kd(sinkd_weight=0.0)), "kd.sinkd_weight"),
                                          (dict(kd=_kd(batch_size=1, sinkd_weight=0.1)), "kd.batch_size"),
                                          (dict(kd=_kd(divergence="js", sinkd_weight=0.1)), "kd.divergence"),
                                          (dict(kd=DistillConfig(sinkd_weight=0.1)), "kd.task")])
def test_bad_settings_name_the_field(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}"):
        KDSinkdConfig(**kwargs)
