"""Every recipe that trains checkpoints into its --out by default, and an interrupted run resumed with
``resume=True`` (``divmin run NAME --out DIR --resume``) reproduces the uninterrupted run's table exactly.

Each recipe runs three times on tiny settings: uninterrupted into A; into B with a KeyboardInterrupt
after ``K`` engine steps in total (counted over all of the recipe's training runs, so that some runs
have finished, one is cut mid-way and others have not started); then resumed into B. The table
(results.json rows and summary) of B must equal A's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from divmin.cli import main
from divmin.engine import _trainer
from divmin.recipes import available_recipes, default_checkpoint_every, explain_column, format_summary, run_recipe

from ._figures import max_significant_digits

# log_every=1: the default checkpoint interval is a multiple of log_every (a quarter of the run here)
_QUIET = ["engine.progress=False", "engine.tensorboard=False", "engine.log_every=1"]
_KD_QUIET = ["kd.engine.progress=False", "kd.engine.tensorboard=False", "kd.engine.log_every=1"]
_FD_QUIET = ["fdistill.engine.progress=False", "fdistill.engine.tensorboard=False", "fdistill.engine.log_every=1"]
_LM = ["warmup.n_layer=1", "warmup.n_embd=16", "warmup.corpus_size=60", "warmup.steps=6", "warmup.batch=8",
       "warmup.response_words=(1, 2)", "heldout_topics=2"]


def _quiet(method: str) -> list[str]:
    """_QUIET for the engine of the method config a recipe nests under ``method``."""
    return [f"{method}.{o}" for o in _QUIET]

# recipe -> (tiny overrides, K = engine steps before the interrupt (all runs together), total engine steps)
CASES = {
    "fit": ([*_QUIET, "divergences=('reverse_kl', 'forward_kl')", "engine.max_steps=8", "grid=(-8.0, 8.0, 64)"],
            5, 8),
    "fdpo-bandit": ([*_QUIET, "responses=8", "divergences=('reverse_kl', 'js')", "betas=(1.0,)",
                     "engine.max_steps=8", "batch_pairs=64"], 5, 8),
    "fdpg-toy": ([*_QUIET, "divergences=('reverse_kl', 'js')", "base_seeds=(0, 1)", "engine.max_steps=8",
                  "batch=32", "exact_steps=10"], 5, 8),
    # warm-up 6 steps, then one f-DPO run of 4 steps per divergence: cut in the second f-DPO run
    "fdpo-lm": ([*_quiet("fdpo"), *_LM, "max_new_tokens=4", "divergences=('reverse_kl', 'js')", "train_pairs=16",
                 "eval_pairs=8", "fdpo.batch_size=4", "fdpo.engine.max_steps=4", "samples_per_prompt=4"], 12, 14),
    "fdpg-lm": ([*_quiet("fdpg"), *_LM, "fdpg.max_new_tokens=4", "divergences=('js', 'reverse_kl')",
                 "fdpg.engine.max_steps=3", "fdpg.contexts_per_step=2", "fdpg.samples_per_context=2", "eval_samples=4",
                 "z_samples=8"], 10, 12),
    # teacher 6 steps, then one student of 4 steps per method and seed: cut in the last student
    "kd-cls": ([*_KD_QUIET, "methods=('ce', 'forward_kl')", "seeds=(0, 1)", "setting.teacher_examples=200",
                "setting.transfer_examples=40", "setting.test_examples=100", "setting.teacher_width=16",
                "setting.student_width=8", "setting.teacher_steps=6", "kd.engine.max_steps=4", "kd.batch_size=8"],
               20, 22),
    # teacher 6 steps, then one student of 4 steps per method and seed: cut in the last student
    "kd-sinkd": ([*_KD_QUIET, "methods=('forward_kl', 'sinkd')", "seeds=(0, 1)", "setting.classes=6", "setting.dim=4",
                  "setting.teacher_examples=200", "setting.transfer_examples=40", "setting.test_examples=100",
                  "setting.teacher_width=16", "setting.student_width=8", "setting.teacher_steps=6",
                  "kd.engine.max_steps=4", "kd.batch_size=8"], 20, 22),
    "kd-lm": ([*_KD_QUIET, "methods=('ce', 'js:on-policy')", "seeds=(0,)", "setting.teacher_sequences=40",
               "setting.transfer_sequences=16", "setting.test_sequences=20", "setting.teacher_steps=6",
               "kd.engine.max_steps=4", "setting.max_words=6", "kd.batch_size=8", "setting.teacher_embd=16",
               "setting.student_embd=8"], 12, 14),
    # teacher 6 steps, then one student of 4 steps per divergence and teacher (cache k=8, live): cut in the third
    "kd-cache": ([*_KD_QUIET, "divergences=('forward_kl', 'js')", "ks=(8,)", "setting.teacher_sequences=40",
                  "setting.transfer_sequences=16", "setting.test_sequences=20", "setting.teacher_steps=6",
                  "kd.engine.max_steps=4", "setting.max_words=6", "setting.words=20", "kd.batch_size=8",
                  "setting.teacher_embd=16", "setting.student_embd=8"], 16, 22),
    "fdistill-gmm": ([*_FD_QUIET, "divergences=('reverse_kl', 'js')", "seeds=(0,)", "sigma_maxes=(1.0,)", "fdistill.engine.max_steps=4",
                      "fdistill.batch_size=32", "score_samples=60", "hidden=16"], 6, 8),
    # classifier 6 steps, teacher 6, one student of 4 steps per divergence: cut in the teacher
    "fdistill-images": ([*_FD_QUIET, "divergences=('reverse_kl',)", "classifier_steps=6", "teacher.engine.max_steps=6",
                         "teacher.engine.log_every=1", "teacher.engine.progress=False",
                         "width=16", "depth=1", "fdistill.engine.max_steps=4", "fdistill.batch_size=16",
                         "score_samples=80", "sampler_steps=2", "fdistill.critic_steps=1", "student_seeds=(0,)",
                         "fdistill.critic_warmup=1"], 9, 16),
    # judge 6 steps, then the MDLM 6 steps: cut in the MDLM
    "mdlm-text": ([*_quiet("mdlm"), *_quiet("judge"), "sentences=60", "mdlm.engine.max_steps=6",
                   "judge.engine.max_steps=6", "samples=16", "width=16",
                   "judge_embd=16", "nfes=(1, 4)", "block_length=8"], 9, 12),
    # teacher 4 steps, then 3 students of 2 steps (full, no grouped norm, no intermediate matching; the
    # no-guided-sampler row samples the full student): cut in the third student
    "didi-synthetic": (["teacher.engine.progress=False", "didi.engine.progress=False", "vocab_size=4", "length=5",
                        "width=16", "depth=1", "heads=2", "nfes=(1, 4)", "score_samples=20", "teacher.batch_size=16",
                        "teacher.engine.max_steps=4", "teacher.engine.log_every=1", "didi.engine.max_steps=2",
                        "didi.engine.log_every=1", "didi.batch_size=8", "didi.teacher_pool=8", "didi.teacher_nfe=2",
                        "didi.eval_samples=8", "didi.disc_warmup=0"], 9, 10),
    # judge 6 steps, then standard and weat for one seed, 6 steps each: cut in the weat run
    # (weat.engine.log_every is the recipe's: trace_every)
    "weat": (["weat.engine.progress=False", "weat.engine.tensorboard=False", "width=16", "weat.engine.max_steps=6",
              "weat.engine.eval_every=3", "trace_every=2", "weat.attack.steps=2", "weat.eval_steps=2",
              "methods=('standard', 'weat')", "seeds=(0,)", "autoattack=False", "sgld_per_class=2", "sgld_steps=3",
              "weat.batch_size=64"], 14, 18),
    # the model (with the adversary), then the no-adversary network, 8 steps each: cut in the second
    "speech-egg": ([*_quiet("speech"), "speech.engine.max_steps=8", "train_utterances=2", "duration=0.3",
                    "test_voices=('creaky',)", "test_snr_db=(5.0,)", "test_channels=('telephone',)",
                    "test_utterances=1", "speech.hidden=4", "speech.frame_len=64", "speech.hop=16",
                    "speech.batch_size=4"], 11, 16),
    # per seed: pretraining 3 steps, then depict-dec, depict-paper and dec 4 steps each: cut in seed 1's
    "depict": ([*_quiet("depict"), "seeds=(0, 1)", "depict.channels=(4,)", "depict.embed_dim=4",
                "depict.pretrain_steps=3", "depict.update_interval=2", "depict.engine.max_steps=4",
                "depict.batch_size=64"], 20, 30),
}
# more cuts, keyed "recipe/where": in the warm-up, between two log steps (log_every=2: checkpoints on
# steps 2, 4, 6; cut after 5, so the resumed warm-up's last logged loss, the summary's warmup_loss,
# must still be the mean over steps 5-6)
EXTRA = {
    "fdpo-lm/warm-up": ([*CASES["fdpo-lm"][0], "fdpo.engine.log_every=2"], 5, 14),
}

# Recipes this test does not cover (none today). A recipe registered without an entry in CASES or here
# fails test_every_recipe_is_covered.
NOT_COVERED: set[str] = set()


def test_every_recipe_is_covered():
    assert set(available_recipes()) - NOT_COVERED == set(CASES)
    assert {case.split("/")[0] for case in EXTRA} <= set(CASES)


class _Interrupt:
    """Replaces Trainer._train_step: counts engine steps of every trainer; Ctrl-C once ``after`` have run."""

    def __init__(self, original, after: int | None) -> None:
        self.original, self.after, self.steps = original, after, 0

    def __call__(self, trainer, run, step):
        if self.after is not None and self.steps == self.after:
            raise KeyboardInterrupt
        self.steps += 1
        return self.original(trainer, run, step)


def _counting(monkeypatch, after: int | None) -> _Interrupt:
    wrapper = _Interrupt(_trainer.Trainer._train_step, after)
    monkeypatch.setattr(_trainer.Trainer, "_train_step", lambda self, run, step: wrapper(self, run, step))
    return wrapper


def _table(out: Path) -> dict:
    saved = json.loads((out / "results.json").read_text())
    return {"columns": saved["columns"], "rows": saved["rows"], "summary": saved["summary"]}


def _checkpoints(out: Path) -> list[Path]:
    return sorted(out.glob("**/checkpoints/step_*"))


@pytest.mark.parametrize("case", [*sorted(CASES), *EXTRA])
def test_interrupted_recipe_resumes_to_the_uninterrupted_table(case, tmp_path, monkeypatch, recwarn):
    overrides, k, total = {**CASES, **EXTRA}[case]
    name = case.split("/")[0]
    full = _counting(monkeypatch, None)
    result = run_recipe(name, tmp_path / "a", overrides)
    assert full.steps == total  # the cases' step counts are what the recipe runs
    # the summary `divmin run` prints: no float with more digits than the data supports
    assert max_significant_digits(format_summary(result.summary)) <= 6, format_summary(result.summary)
    if name == "weat":  # one seed: no spread column of zeros, a note instead
        assert "pgd_acc_std" not in result.columns and "one seed" in result.summary["pgd_acc_std"]
    # every column the recipe prints is explained under its table (divmin.recipes.COLUMNS)
    assert [c for c in _table(tmp_path / "a")["columns"] if explain_column(name, c) is None] == []
    assert _checkpoints(tmp_path / "a")  # checkpoints by default
    monkeypatch.undo()

    cut = _counting(monkeypatch, k)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(name, tmp_path / "b", overrides)
    assert cut.steps == k and not (tmp_path / "b" / "results.json").exists()
    assert _checkpoints(tmp_path / "b")
    monkeypatch.undo()

    rest = _counting(monkeypatch, None)
    recwarn.clear()
    run_recipe(name, tmp_path / "b", overrides, resume=True)
    # runs the interrupted recipe never reached start fresh without a "no checkpoint" warning each
    assert not [w for w in recwarn if "no checkpoint" in str(w.message)]
    # only the steps after the in-progress run's last checkpoint were trained again
    assert rest.steps < total
    assert _table(tmp_path / "b") == _table(tmp_path / "a")


def test_resume_into_a_directory_without_checkpoints_warns_once_and_runs_from_the_start(tmp_path, recwarn):
    overrides = CASES["kd-cls"][0]
    run_recipe("kd-cls", tmp_path / "a", overrides)
    recwarn.clear()
    run_recipe("kd-cls", tmp_path / "b", overrides, resume=True)
    assert [str(w.message) for w in recwarn if "no checkpoint" in str(w.message)] == [
        f"resume: no checkpoint under {tmp_path / 'b'}; running 'kd-cls' from the beginning"]
    assert _table(tmp_path / "b") == _table(tmp_path / "a")


def test_the_checkpoint_interval_is_a_quarter_of_the_run_on_a_log_step():
    assert [default_checkpoint_every(n) for n in (1, 3, 4, 8, 1500)] == [1, 1, 1, 2, 375]
    assert [default_checkpoint_every(n, 50) for n in (8, 200, 1500)] == [50, 50, 350]


def test_ctrl_c_on_the_command_line_then_resume_prints_the_uninterrupted_table(tmp_path, monkeypatch, capsys):
    overrides, k, _ = CASES["fit"]
    argv = [arg for o in overrides for arg in ("--set", o)]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(["run", "fit", "--out", a, *argv]) == 0
    table = _printed_table(capsys.readouterr().out)

    _counting(monkeypatch, k)
    assert main(["run", "fit", "--out", b, *argv]) == 130
    assert capsys.readouterr().err == f"divmin: interrupted; continue with: divmin run fit --out {b} --resume\n"
    monkeypatch.undo()
    assert main(["run", "fit", "--out", b, *argv]) == 2  # a plain rerun would overwrite the checkpoints
    assert "--resume" in capsys.readouterr().err
    assert main(["run", "fit", "--out", b, *argv, "--resume"]) == 0
    assert _printed_table(capsys.readouterr().out) == table


def _printed_table(stdout: str) -> str:
    """The table and summary lines the CLI prints (after the engine's log lines, before "wrote ...")."""
    return stdout[stdout.index("divergence "):stdout.index("wrote ")]
