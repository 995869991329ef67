"""The kd-cache recipe on tiny settings: a cache with k >= V trains the live-teacher student; rows, claims, figure."""

from __future__ import annotations

import dataclasses

import pytest

from divmin.recipes import run_recipe

from ._figures import check_figure

TINY = ["kd.engine.progress=False", "kd.engine.tensorboard=False", "setting.teacher_sequences=80",
        "setting.transfer_sequences=24", "setting.test_sequences=30", "setting.teacher_steps=20",
        "kd.engine.max_steps=8", "setting.max_words=8", "setting.words=30", "kd.batch_size=8",
        "setting.teacher_embd=16", "setting.student_embd=8"]


def test_no_row_for_a_cache_of_the_whole_vocabulary(tmp_path):
    # V = 2 + 8 + 30 = 40 <= k = 64: such a cache costs more than fp16 logits and is the live teacher
    # (k = V reproducing the live teacher is tests/distill/test_cache.py's); the recipe says so instead of a row
    result = run_recipe("kd-cache", tmp_path, [*TINY, "ks=(4, 64)", "divergences=('forward_kl',)"])
    assert [r["k"] for r in result.rows] == ["4", "live"]
    assert result.summary["vocab_size"] == 40 and "k = 64 >= V = 40" in result.summary["ks_not_run"]
    assert result.rows[1]["bytes_per_token"] == 2 * 40
    with pytest.raises(ValueError, match="`ks`: every k is >= the vocabulary V = 40"):
        run_recipe("kd-cache", tmp_path / "all", [*TINY, "ks=(64,)"])


def test_rows_claims_and_figure(tmp_path):
    result = run_recipe("kd-cache", tmp_path, [*TINY, "ks=(4, 32)", "divergences=('js',)"])
    assert result.columns == ["divergence", "k", "student_ppl", "ppl sd", "kl_to_teacher", "bytes_per_token"]
    assert [r["k"] for r in result.rows] == ["4", "32", "live"]
    assert all(r["ppl sd"] == 0.0 for r in result.rows)  # one seed: no spread
    by = {r["k"]: r for r in result.rows}
    assert by["4"]["bytes_per_token"] < by["32"]["bytes_per_token"] < by["live"]["bytes_per_token"]
    s = result.summary
    ratio = by["32"]["student_ppl"] / by["live"]["student_ppl"]
    assert s["ppl_ratio_to_live"]["js/k32"] == pytest.approx(ratio)
    assert s["k32_ppl_vs_live"] == {"js": f"{100 * (ratio - 1):+.1f}%"} and "k32_within_2pct_of_live" not in s
    assert s["k32_at_most_2pct_worse_than_live"] == {"js": ratio <= 1.02}
    assert s["k32_at_most_150_bytes_per_token"] == (by["32"]["bytes_per_token"] <= 150)
    assert s["true_ppl"] < s["teacher_ppl"]
    assert 0 < s["teacher_topk_mass"][4] < s["teacher_topk_mass"][32] <= 1 + 1e-6
    record = check_figure(tmp_path / "kd_cache.png")
    assert record["data"]["js"]["live"] == pytest.approx(by["live"]["student_ppl"])
    assert [p[1] for p in record["data"]["js"]["cache"]] == pytest.approx([by["4"]["student_ppl"],
                                                                           by["32"]["student_ppl"]])


def test_the_nested_kd_config_nests_and_refuses_what_the_recipe_sets():
    from divmin.distill import DistillConfig
    from divmin.recipes.kd_cache import KDCacheConfig
    from divmin.recipes.kd_lm import KDLMConfig

    c = KDCacheConfig()
    # the shared setting is kd-lm's with a larger vocabulary; the KD settings are the students' of kd-lm
    assert c.setting == dataclasses.replace(KDLMConfig().setting, words=60)
    assert (c.kd.lr, c.kd.batch_size, c.kd.engine) == (KDLMConfig().kd.lr, KDLMConfig().kd.batch_size,
                                                        KDLMConfig().kd.engine)
    with pytest.raises(ValueError, match="`kd.divergence` is set per run by `divergences`"):
        KDCacheConfig(kd=DistillConfig(divergence="js"))
    with pytest.raises(ValueError, match="`kd.task`"):
        KDCacheConfig(kd=DistillConfig(task="sequence_classification"))
