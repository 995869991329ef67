"""Recipe didi-synthetic at tiny settings: one row per (model, nfe), exact figures, claims computed from the rows."""

import json
import math

import pytest

from divmin.data import MarkovLanguage
from divmin.recipes import run_recipe

from ._figures import check_figure


def test_didi_synthetic_tiny(tmp_path):
    result = run_recipe("didi-synthetic", tmp_path, overrides=(
        "vocab_size=4", "length=5", "width=16", "depth=1", "heads=2", "nfes=(1, 4, 8)", "score_samples=40",
        "teacher.batch_size=16", "teacher.engine.max_steps=3", "didi.engine.max_steps=2", "didi.batch_size=8",
        "didi.teacher_pool=16", "didi.teacher_nfe=4", "didi.eval_samples=8", "didi.disc_warmup=1"))
    assert result.columns == ["model", "nfe", "gen_ppl", "entropy"]
    models = ["teacher", "student", "student-no-guided-sampler", "student-no-grouped-norm", "student-no-intermediate"]
    assert [(r["model"], r["nfe"]) for r in result.rows] == [(m, n) for n in (1, 4, 8) for m in models]
    for r in result.rows:
        assert 1.0 <= r["gen_ppl"] and 0.0 <= r["entropy"] <= math.log(4) + 1e-9
    lang = MarkovLanguage(4, 5, order=1, seed=0)
    s = result.summary
    assert s["true_ppl"] == pytest.approx(math.exp(lang.entropy_rate))
    get = {(r["model"], r["nfe"]): r for r in result.rows}
    for nfe in (4, 8):
        t, st = get[("teacher", nfe)], get[("student", nfe)]
        assert s[f"student_beats_teacher_at_{nfe}"] == (st["gen_ppl"] < t["gen_ppl"])
        plain = get[("student-no-guided-sampler", nfe)]
        assert s[f"unguided_student_beats_teacher_at_{nfe}"] == (plain["gen_ppl"] < t["gen_ppl"])
        assert s[f"entropy_loss_pct_at_{nfe}"] == pytest.approx(100 * (t["entropy"] - st["entropy"]) / t["entropy"])
    record = check_figure(result.plots[0])
    teacher_ppl = [get[("teacher", n)]["gen_ppl"] for n in (1, 4, 8)]
    assert [p[1] for p in record["data"]["teacher"]] == pytest.approx(teacher_ppl)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"][0]["model"] == "teacher"


def test_didi_synthetic_without_ablations(tmp_path):
    result = run_recipe("didi-synthetic", tmp_path, overrides=(
        "vocab_size=4", "length=5", "width=16", "depth=1", "heads=2", "nfes=(2,)", "score_samples=10", "ablations=False",
        "teacher.batch_size=16", "teacher.engine.max_steps=2", "didi.engine.max_steps=1", "didi.batch_size=8",
        "didi.teacher_pool=8", "didi.teacher_nfe=2", "didi.eval_samples=8", "didi.disc_warmup=0"))
    assert [r["model"] for r in result.rows] == ["teacher", "student"]
    assert "student_beats_teacher_at_4" not in result.summary
