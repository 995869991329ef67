"""The kd-cls and kd-lm recipes on tiny settings, and their exact oracles (Bayes classifier, true LM law)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from divmin.recipes import run_recipe
from divmin.distill import DistillConfig
from divmin.recipes.kd_cls import KDClsConfig, MixtureSetting, MixtureTask
from divmin.recipes.kd_lm import EOS, KDLMConfig, MarkovCorpus, MarkovSetting

from ._figures import check_figure

QUIET = ["kd.engine.progress=False", "kd.engine.tensorboard=False"]


def test_bayes_posterior_matches_scipy_densities():
    task = MixtureTask(MixtureSetting(classes=3, dim=2, modes_per_class=2))
    x, _ = task.sample(20)
    dens = np.stack([sum(multivariate_normal(task.means[k, m].numpy(), np.eye(2)).pdf(x.numpy())
                         for m in range(2)) for k in range(3)], -1)
    np.testing.assert_allclose(task.bayes_log_posterior(x).exp().numpy(), dens / dens.sum(-1, keepdims=True),
                               rtol=1e-5, atol=1e-7)


def test_markov_law_is_normalised_and_matches_sample_frequencies():
    corpus = MarkovCorpus(MarkovSetting(topics=2, words=5, max_words=6))
    for k in range(1, 7):
        assert float(corpus.next_law(1, 3, k).sum()) == pytest.approx(1.0, abs=1e-6)
    rows = corpus.sample(6000)
    # first completion token after (topic 0, word w0): empirical frequencies vs the exact law
    w0 = max(range(5), key=lambda w: sum(r["prompt_ids"] == [2, 2 + 2 + w] for r in rows))
    hits = [r["completion_ids"][0] for r in rows if r["prompt_ids"] == [2, 4 + w0]]
    freq = np.bincount(hits, minlength=corpus.vocab) / len(hits)
    law = corpus.next_law(0, w0, 1).numpy()
    assert np.abs(freq - law).max() < 4 * math.sqrt(0.25 / len(hits))
    assert all(r["completion_ids"][-1] == EOS and len(r["prompt_ids"]) + len(r["completion_ids"]) <= 6 + 2
               for r in rows)


def test_kd_cls_smoke(tmp_path):
    over = QUIET + ['methods=("ce", "forward_kl", "sinkd")', "seeds=(0, 1)", "setting.teacher_examples=3000",
                    "setting.transfer_examples=200", "setting.test_examples=1500", "setting.teacher_steps=300",
                    "kd.engine.max_steps=200", "kd.temperature=1.0"]
    result = run_recipe("kd-cls", tmp_path, over)
    rows = {r["model"].split(" (")[0]: r for r in result.rows}
    assert list(rows)[:2] == ["Bayes classifier", "teacher"]
    bayes, teacher = rows["Bayes classifier"]["accuracy"], rows["teacher"]["accuracy"]
    assert teacher <= bayes + 0.03  # nothing beats the Bayes classifier (up to test-sample noise)
    for m in ("ce", "forward_kl", "sinkd"):
        r = rows[f"student: {m}"]
        assert 0.1 < r["accuracy"] <= bayes + 0.03
        assert r["std"] > 0  # the two seeds train two different students
    # at T = 1 the distilled student minimises KL(T||S) itself: it ends closer to the teacher than the CE student
    assert rows["student: forward_kl"]["KL(T||S)"] < rows["student: ce"]["KL(T||S)"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"]["student_accuracy"].keys() == {"ce", "forward_kl", "sinkd"}
    assert (tmp_path / "students" / "sinkd" / "seed1" / "metrics.jsonl").stat().st_size > 0
    # the reported share of the Sinkhorn term, recomputed from the students' own logs
    shares = []
    for seed in (0, 1):
        last = json.loads((tmp_path / "students" / "sinkd" / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()[-1])
        shares.append(0.0008 * last["sinkd"] / last["loss"])
    assert 0 < saved["summary"]["sinkd_loss_share"] == pytest.approx(sum(shares) / 2)
    figure = check_figure(tmp_path / "kd_cls.png")
    assert figure["data"]["bars"] == pytest.approx(saved["summary"]["student_accuracy"])
    assert figure["data"]["errors"] == pytest.approx({m: rows[f"student: {m}"]["std"] for m in figure["data"]["bars"]})
    assert figure["data"]["references"]["Bayes classifier"] == pytest.approx(bayes)
    assert saved["plots"] == [str(tmp_path / "kd_cls.png")]


def test_kd_lm_smoke(tmp_path):
    over = QUIET + ['methods=("ce", "forward_kl", "js:on-policy", "sinkd")', "seeds=(0,)",
                    "setting.teacher_sequences=400", "setting.transfer_sequences=64", "setting.test_sequences=100",
                    "setting.teacher_steps=150", "kd.engine.max_steps=40", "setting.max_words=8", "kd.batch_size=16"]
    result = run_recipe("kd-lm", tmp_path, over)
    rows = {r["model"].split(" (")[0]: r for r in result.rows}
    true_ppl, teacher = rows["true law"]["ppl"], rows["teacher"]["ppl"]
    assert teacher > 0.95 * true_ppl  # the true law is the best predictor (up to test-sample noise)
    for m in ("ce", "forward_kl", "js:on-policy"):
        r = rows[f"student: {m}"]
        assert r["ppl"] > 0.95 * true_ppl and r["KL(T||S)"] != r["KL(S||T)"]  # KL is not symmetric
    assert rows["student: forward_kl"]["KL(T||S)"] < rows["student: ce"]["KL(T||S)"]
    assert result.summary["best_method"] in ("forward_kl", "js:on-policy", "sinkd")
    # the SinKD row is forward-KL KD plus the Sinkhorn term: the term is logged and changes the student
    sinkd_log = (tmp_path / "students" / "sinkd" / "seed0" / "metrics.jsonl").read_text()
    assert '"sinkd"' in sinkd_log
    assert rows["student: sinkd"]["KL(T||S)"] != rows["student: forward_kl"]["KL(T||S)"]
    figure = check_figure(tmp_path / "kd_lm.png")
    assert figure["data"]["bars"] == pytest.approx(result.summary["student_ppl"])
    assert figure["data"]["references"]["true law"] == pytest.approx(true_ppl)
    assert figure["data"]["references"]["teacher"] == pytest.approx(teacher)


@pytest.mark.parametrize("cls,bad", [(KDClsConfig, dict(methods=("nope",))), (MixtureSetting, dict(classes=1)),
                                     (KDLMConfig, dict(methods=("js:on-policy2",))), (MarkovSetting, dict(p_end=0.0)),
                                     (KDLMConfig, dict(seeds=()))])
def test_bad_configs(cls, bad):
    with pytest.raises(ValueError):
        cls(**bad)


@pytest.mark.parametrize("cls,kd,name", [
    (KDClsConfig, DistillConfig(task="sequence_classification", divergence="js"), "kd.divergence"),
    (KDClsConfig, DistillConfig(), "kd.task"),
    (KDLMConfig, DistillConfig(divergence="js"), "kd.divergence"),
    (KDLMConfig, DistillConfig(max_new_tokens=5), "kd.max_new_tokens"),
    (KDLMConfig, DistillConfig(task="sequence_classification"), "kd.task"),
])
def test_the_nested_kd_config_may_not_set_what_the_recipe_sets(cls, kd, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        cls(kd=kd)


def test_student_configs_are_the_nested_kd_config_per_method(tmp_path):
    from divmin.recipes import kd_cls, kd_lm

    c = KDClsConfig()
    ce, fkl, sinkd = (kd_cls._student_config(c, m, 0, tmp_path) for m in ("ce", "forward_kl", "sinkd"))
    assert (ce.alpha, ce.sinkd_weight, fkl.alpha, fkl.sinkd_weight) == (0.0, 0.0, 0.9, 0.0)
    assert (sinkd.divergence, sinkd.sinkd_weight, sinkd.temperature, sinkd.lr) == ("forward_kl", 0.0008, 4.0, 3e-3)
    c = KDLMConfig()
    off, on, sk = (kd_lm._student_config(c, m, 0, tmp_path) for m in ("js", "js:on-policy", "sinkd"))
    assert (off.divergence, off.lmbda, on.divergence, on.lmbda, sk.lmbda, sk.sinkd_weight) == ("js", 0.0, "js", 0.5,
                                                                                               0.0, 0.0008)
    assert off.max_new_tokens == c.setting.max_words and off.engine.seed == 0 and off.engine.max_steps == 300
