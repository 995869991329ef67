"""The kd-cache recipe on tiny settings: a cache with k >= V trains the live-teacher student; rows, claims, figure."""

from __future__ import annotations

import pytest

from divmin.recipes import run_recipe

from ._figures import check_figure

TINY = ["engine.progress=False", "engine.tensorboard=False", "teacher_sequences=80", "transfer_sequences=24",
        "test_sequences=30", "teacher_steps=20", "engine.max_steps=8", "max_words=8", "words=30", "batch_size=8",
        "teacher_embd=16", "student_embd=8"]


def test_a_cache_of_the_whole_vocabulary_trains_the_live_teacher_student(tmp_path):
    # V = 2 + 8 + 30 = 40 <= k: the cache holds every id (float32, tail empty), so the student is the live one's
    result = run_recipe("kd-cache", tmp_path, [*TINY, "ks=(64,)", "dtype='float32'",
                                               "divergences=('forward_kl', 'reverse_kl')"])
    by = {(r["divergence"], r["k"]): r for r in result.rows}
    for div in ("forward_kl", "reverse_kl"):
        cached, live = by[div, "64"], by[div, "live"]
        assert cached["student_ppl"] == pytest.approx(live["student_ppl"], rel=1e-4)
        assert cached["kl_to_teacher"] == pytest.approx(live["kl_to_teacher"], rel=1e-3, abs=1e-6)
        # k = V = 40 ids of 1 byte, 4-byte log-probs, the 4-byte tail, plus offsets and shard headers
        assert 40 * 5 + 4 <= cached["bytes_per_token"] < 40 * 5 + 4 + 40
        assert live["bytes_per_token"] == 2 * 40
    assert result.summary["vocab_size"] == 40
    assert result.summary["teacher_topk_mass"] == {64: pytest.approx(1.0, abs=1e-5)}


def test_rows_claims_and_figure(tmp_path):
    result = run_recipe("kd-cache", tmp_path, [*TINY, "ks=(4, 32)", "divergences=('js',)"])
    assert result.columns == ["divergence", "k", "student_ppl", "kl_to_teacher", "bytes_per_token"]
    assert [r["k"] for r in result.rows] == ["4", "32", "live"]
    by = {r["k"]: r for r in result.rows}
    assert by["4"]["bytes_per_token"] < by["32"]["bytes_per_token"] < by["live"]["bytes_per_token"]
    s = result.summary
    ratio = by["32"]["student_ppl"] / by["live"]["student_ppl"]
    assert s["ppl_ratio_to_live"]["js/k32"] == pytest.approx(ratio)
    assert s["k32_within_2pct_of_live"] == {"js": abs(ratio - 1) <= 0.02}
    assert s["k32_at_most_2pct_worse_than_live"] == {"js": ratio <= 1.02}
    assert s["k32_at_most_150_bytes_per_token"] == (by["32"]["bytes_per_token"] <= 150)
    assert s["true_ppl"] < s["teacher_ppl"]
    assert 0 < s["teacher_topk_mass"][4] < s["teacher_topk_mass"][32] <= 1 + 1e-6
    record = check_figure(tmp_path / "kd_cache.png")
    assert record["data"]["js"]["live"] == pytest.approx(by["live"]["student_ppl"])
    assert [p[1] for p in record["data"]["js"]["cache"]] == pytest.approx([by["4"]["student_ppl"],
                                                                           by["32"]["student_ppl"]])
