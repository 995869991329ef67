"""The f-DPG recipes: `fdpg-toy` (exact metrics on an enumerable space) and `fdpg-lm` (tiny GPT-2)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from divmin.data import all_sequences
from divmin.engine import parse_overrides
from divmin.recipes import run_recipe
from divmin.recipes.fdpg_lm import FDPGLMConfig
from divmin.recipes.fdpg_toy import FDPGToyConfig, _modes, toy_target

from ._figures import assert_close_lists, check_figure

QUIET = ["engine.progress=False", "engine.tensorboard=False"]


def test_modes_are_constrained_local_maxima():
    seqs = all_sequences(2, 2)  # 00, 01, 10, 11
    log_p = torch.log(torch.tensor([0.4, 0.1, 0.2, 0.3]))
    ok = torch.tensor([True, True, True, True])
    assert _modes(log_p, seqs, ok, 2).tolist() == [0, 3]  # 00 beats 01 and 10; 11 beats 01 and 10
    assert _modes(log_p, seqs, torch.tensor([False, True, True, True]), 2).tolist() == [3]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fdpg_toy")
    overrides = QUIET + ["divergences=('reverse_kl','forward_kl','js')", "base_seeds=(0,)", "engine.max_steps=150",
                         "exact_steps=300"]
    return out, run_recipe("fdpg-toy", out, overrides)


def test_toy_outputs_and_exact_metrics(toy_run):
    out, result = toy_run
    for name in ("config.json", "results.json", "per_seed.json", "alignment_vs_entropy.png"):
        assert (out / name).stat().st_size > 0, name
    rows = {r["divergence"]: r for r in result.rows}
    assert set(rows) == {"reverse_kl", "forward_kl", "js"}
    for r in rows.values():
        assert 0 < r["alignment"] <= 1 and r["KL(P||Q)"] > 0 and r["KL(Q||P)"] > 0 and 0 < r["acceptance"] < 1
        assert r["D_f / optimum"] < 1.2, r  # Monte-Carlo f-DPG got close to the exact-gradient optimum
    # each divergence is best at its own criterion among the three
    assert rows["forward_kl"]["KL(P||Q)"] == min(r["KL(P||Q)"] for r in rows.values())
    assert rows["reverse_kl"]["KL(Q||P)"] == min(r["KL(Q||P)"] for r in rows.values())
    per_seed = json.loads((out / "per_seed.json").read_text())
    assert len(per_seed) == 3 and all(p["seed"] == 0 for p in per_seed)
    # the target by hand: P proportional to a(x) (b(x) + 1e-3), b = "token 3 at least twice", over all 5^4 sequences
    seqs = all_sequences(5, 4)
    b = ((seqs == 3).sum(1) >= 2).double()
    log_p = torch.log_softmax(toy_target(FDPGToyConfig(), 0)[2].log_prob(seqs).double() + torch.log(b + 1e-3), 0)
    assert result.summary["target_alignment"] == pytest.approx(float((log_p.exp() * b).sum()), rel=1e-6)
    assert result.summary["target_entropy"] == pytest.approx(float(-(log_p.exp() * log_p).sum()), rel=1e-6)
    figure = check_figure(out / "alignment_vs_entropy.png")
    assert_close_lists(figure["data"]["entropy"], [p["entropy"] for p in per_seed])
    assert_close_lists(figure["data"]["alignment"], [p["alignment"] for p in per_seed])


def test_lm_recipe_runs_end_to_end(tmp_path):
    overrides = ["fdpg.engine.progress=False", "fdpg.engine.tensorboard=False", "divergences=('js',)",
                 "warmup.steps=30", "warmup.corpus_size=300", "fdpg.engine.max_steps=3", "fdpg.contexts_per_step=2",
                 "fdpg.samples_per_context=4", "eval_samples=16", "z_samples=64"]
    result = run_recipe("fdpg-lm", tmp_path, overrides)
    (row,) = result.rows
    # alignment is the share of the 2 held-out prompts x 16 samples that meet the constraint
    assert row["alignment"] * 32 == pytest.approx(round(row["alignment"] * 32), abs=1e-9)
    assert row["KL(pi||base)"] > -0.5 and row["entropy"] > 0
    figure = check_figure(tmp_path / "alignment_vs_diversity.png")
    assert_close_lists(figure["data"]["y"], [row["alignment"]])
    assert_close_lists(figure["data"]["x"]["entropy"], [row["entropy"]])
    assert figure["data"]["reference"]["alignment"] == pytest.approx(result.summary["base_alignment"])
    assert (tmp_path / "fdpg" / "js" / "metrics.jsonl").stat().st_size > 0
    # the objective columns are the training-prompt matrix's entries; one member is best on its own D_f
    matrix = result.summary["own_objective_matrix (train)"]["js"]
    assert row["own D_f (train)"] == pytest.approx(matrix["D[js]"], abs=1e-4)
    assert row["KL(P||pi) (train)"] == pytest.approx(matrix["D[forward_kl]"], abs=1e-4)
    assert row["KL(pi||P) (train)"] == pytest.approx(matrix["D[reverse_kl]"], abs=1e-4)
    assert result.summary["best_on_own_objective (train)"] == {"js": True}
    assert 0 < row["ESS(P/pi)"] <= 1 and 0 < row["ESS(P/pi) (train)"] <= 1


@pytest.mark.parametrize("cls, bad", [
    (FDPGToyConfig, dict(divergences=("nope",))), (FDPGToyConfig, dict(vocab=50, length=5)),
    (FDPGToyConfig, dict(epsilon=0.0)), (FDPGToyConfig, dict(token=9)),
    (FDPGLMConfig, dict(min_good=9)), (FDPGLMConfig, dict(epsilon=0.0)), (FDPGLMConfig, dict(divergences=())),
])
def test_configs_reject_bad_values(cls, bad):
    with pytest.raises(ValueError):
        cls(**bad)


@pytest.mark.parametrize("bad, named", [
    (["fdpg.mode=sideways"], "`fdpg.mode`"),
    (["fdpg.max_new_tokens=5"], "`warmup.response_words`"),  # a corpus answer (5 words + 2) must fit the cap
    (["fdpg.divergence=reverse_kl"], "`fdpg.divergence` is set by the recipe"),  # per run, from `divergences`
])
def test_lm_config_checks_its_nested_keys(bad, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        parse_overrides(FDPGLMConfig(), bad)
