"""The command line: listings, runs and clear errors."""

from __future__ import annotations

import dataclasses

import pytest

import divmin
from divmin.cli import main
import divmin.recipes
from divmin.recipes import available_recipes, parse_overrides, run_recipe
from divmin.engine import config_keys
from divmin.recipes.fit import FitConfig

from ._figures import max_significant_digits


def test_divergences_table_lists_every_member(capsys):
    assert main(["divergences"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for name in divmin.available_divergences():
        assert lines[name][1] == divmin.divergence(name).kind
    assert "h bounded" in out and "mode-seeking" in out
    assert lines["sinkhorn"][-2:] == ["-", "-"]  # no f, so no tails to report


def test_recipes_lists_fit(capsys):
    assert main(["recipes"]) == 0
    assert "fit" in capsys.readouterr().out


@pytest.mark.parametrize("name", available_recipes())
def test_recipes_name_prints_every_config_key_with_its_default_and_comment(name, capsys):
    assert main(["recipes", name]) == 0
    out = capsys.readouterr().out
    config = divmin.recipes.get_recipe(name).config_cls()
    printed = {}
    for line in out.splitlines():
        if line.startswith("  ") and " = " in line:
            left, _, comment = line.strip().partition("  # ")
            key, _, value = left.partition(" = ")
            printed[key.strip()] = (value.strip(), comment)
    # nested keys with their `engine.` prefix; not the keys --out / --resume and the recipe set themselves
    plumbing = {"resume", "engine.out_dir", "engine.label", "engine.progress"}
    assert set(printed) == {k for k in config_keys(type(config)) if k.split(".", 1)[-1] not in plumbing
                            and k.rsplit(".", 1)[-1] not in {"out_dir", "label", "progress"}}
    assert not set(printed) & plumbing
    for key, (value, comment) in printed.items():
        assert comment, f"{name}: key {key!r} has no comment"
        # the value shown is the recipe's default, as a literal that --set accepts
        node = config
        for part in key.split("."):
            node = getattr(node, part)
        assert value == repr(node)
    assert "Default " not in out  # the class's own default would contradict the recipe's value shown
    # checkpoints: the interval a run uses when the key is left at None (a quarter), not the engine's "never"
    for key, (value, comment) in printed.items():
        if key.endswith("checkpoint_every") and value == "None":
            assert "None = never" not in comment and "a quarter of each run" in comment, comment


def test_recipes_name_of_an_unknown_recipe_is_one_line(capsys):
    assert main(["recipes", "nope"]) == 2
    assert capsys.readouterr().err.startswith("divmin: error: unknown recipe 'nope'; available: ")


def test_run_explains_its_columns_and_lists_the_files_it_wrote(tmp_path, capsys):
    out = tmp_path / "fit"
    argv = ["run", "fit", "--out", str(out), "--set", "divergences=('reverse_kl',)", "--set", "engine.max_steps=2",
            "--set", "engine.progress=False", "--set", "engine.tensorboard=False"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    legend = printed[printed.index("columns:\n"):].splitlines()
    for column in ("divergence", "behaviour", "start", "modes covered", "KL(Q||P)"):
        assert any(line.startswith(f"  {column}: ") for line in legend), column
    wrote = [line for line in printed.splitlines() if line.startswith("wrote ")]
    files = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    assert wrote == [f"wrote {out}/: {', '.join(files)}"]
    assert {"config.json", "results.json", "metrics.jsonl", "fit.png"} <= set(files)
    summary = printed[printed.index("modes_in_target"):printed.index("wrote ")]
    assert max_significant_digits(summary) <= 6, summary


def test_summaries_print_figures_to_4_significant_digits():
    summary = {"pairs_seen": 1165936.11, "reward": 0.12345678901234, "ok": True, "steps": 300,
               "seeds": {0: {"pgd_acc": 0.4873999953269958, "kl": [0.01234567, 2.0]}, 1: {"pgd_acc": 0.5}},
               "target": {"gen_ppl": 18.364112}}
    text = divmin.recipes.format_summary(summary)
    assert text.splitlines() == ["pairs_seen: 1.166e+06", "reward: 0.1235", "ok: True", "steps: 300", "seeds:",
                                 "  0: pgd_acc=0.4874, kl=[0.01235, 2]", "  1: pgd_acc=0.5",
                                 "target: gen_ppl=18.36"]
    assert max_significant_digits(text) == 4
    assert max_significant_digits(str(summary)) == 16  # the oracle counts what the old print showed


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["run", "nope", "--out", "X"], "unknown recipe 'nope'; available: " + ", ".join(available_recipes())),
        (["run", "fit", "--out", "X", "--set", "bogus=1"], "valid keys"),
        (["run", "fit", "--out", "X", "--set", "lr=fast"], "lr"),
        (["run", "fit", "--out", "X", "--set", "divergences=('kl',)"], "forward_kl"),
        (["run", "fit", "--out", "X", "--set", "engine.max_steps=0"], "max_steps"),
        (["run", "fit", "--out", "X", "--set", "noequals"], "key=value"),
    ],
)
def test_cli_errors_are_one_clear_line(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["run", "fti"], "unknown recipe 'fti' (did you mean 'fit'?); available: "),
        (["run", "fit", "--set", "engine.max_step=3"],
         "unknown config key 'engine.max_step' (did you mean 'engine.max_steps'?); valid keys: "),
        (["run", "fit", "--set", "divergences=('revers_kl',)"],
         "unknown divergence 'revers_kl' (did you mean 'reverse_kl'?); valid names: "),
        (["run", "fdpo-bandit", "--set", "divergence=js"],
         "unknown config key 'divergence' (did you mean 'divergences'?); valid keys: "),
        (["run", "fit", "--set", "engine.max_steps=2.5"], "--set engine.max_steps: 2.5 is not an int\n"),
        (["run", "fit", "--set", "zzzz=1"], "unknown config key 'zzzz'; valid keys: "),  # nothing close: no guess
    ],
)
def test_typos_get_a_did_you_mean(argv, expected, capsys, tmp_path):
    assert main([*argv[:2], "--out", str(tmp_path / "run"), *argv[2:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err


def test_values_are_literals_never_code(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(ValueError, match="lr"):
        parse_overrides(FitConfig(), [f"lr=__import__('pathlib').Path('{marker}').touch()"])
    assert not marker.exists()


def test_overrides_reach_nested_configs_and_coerce_types():
    cfg = parse_overrides(FitConfig(), ["lr=1", "engine.max_steps=7", "means=(-3, 0, 3)"])
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.engine.max_steps == 7 and cfg.means == (-3.0, 0.0, 3.0)
    assert dataclasses.is_dataclass(cfg.engine)


@dataclasses.dataclass
class _NoResumeConfig:
    width: int = 4


@pytest.fixture
def no_resume():
    """A recipe without a `resume` field (every recipe that trains has one), registered for one test."""
    from divmin.recipes import RecipeResult, _registry, recipe

    recipe("no-resume", _NoResumeConfig, "a recipe that does not train")(lambda c, out: RecipeResult([], [], []))
    yield "no-resume"
    _registry.RECIPES.discard("no-resume")


def test_resume_is_refused_by_recipes_that_cannot_resume(no_resume, tmp_path, capsys):
    with pytest.raises(ValueError, match="does not resume"):
        run_recipe(no_resume, tmp_path, [], resume=True)
    assert not (tmp_path / "config.json").exists()
    assert main(["run", no_resume, "--out", str(tmp_path), "--resume"]) == 2
    assert "does not resume" in capsys.readouterr().err


@pytest.mark.parametrize(
    "recipe, extra, expected",
    [
        ("fit", ["--set", "engine.lr_schedule=cosin"], "`engine.lr_schedule` must be one of"),
        ("fit", ["--set", "lr=-1"], "`lr` must be a finite number > 0"),
        ("fit", ["--set", "lr=1e309"], "`lr` must be a finite number > 0, got inf"),
        ("fit", ["--set", "divergences=reverse_kl"], "expected a tuple, got 'reverse_kl'; write divergences=('reverse_kl',)"),
        ("fdpo-lm", ["--set", "divergences=('total_variation',)"], "total_variation cannot be used with f-DPO"),
    ],
)
def test_config_mistakes_are_one_line_and_exit_2(recipe, extra, expected, capsys, tmp_path):
    assert main(["run", recipe, "--out", str(tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err


def test_out_naming_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["run", "fit", "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file" in err


QUICK = ["--set", "engine.max_steps=4", "--set", "engine.progress=False", "--set", "engine.tensorboard=False",
         "--set", "divergences=('reverse_kl',)"]


def test_rerun_into_a_checkpointed_directory_says_use_resume(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["run", "fit", "--out", out, *QUICK, "--set", "engine.checkpoint_every=2"]) == 0
    capsys.readouterr()
    assert main(["run", "fit", "--out", out, *QUICK]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"`divmin run fit --out {out} --resume`" in err
    assert "fit(resume=True)" not in err  # the Python API's words, not the command line's


def test_a_second_run_into_a_directory_in_use_is_refused(tmp_path, capsys):
    from divmin.engine import run_lock

    with run_lock(tmp_path):  # held by "another run" (this process's lock is re-entrant, so fake the holder)
        from divmin.engine import _lock

        held = _lock._HELD.pop(tmp_path.resolve())
        try:
            assert main(["run", "fit", "--out", str(tmp_path), *QUICK]) == 2
        finally:
            _lock._HELD[tmp_path.resolve()] = held
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use by another divmin run (PID" in err


def test_ctrl_c_is_one_line_saying_how_to_resume(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("divmin.engine._trainer.Trainer._loop", interrupted)
    out = str(tmp_path / "run")
    assert main(["run", "fit", "--out", out, *QUICK]) == 130
    assert capsys.readouterr().err == f"divmin: interrupted; continue with: divmin run fit --out {out} --resume\n"


def test_a_diverging_run_exits_non_zero_naming_the_step(tmp_path, capsys):
    # a learning rate this large overflows the fit's parameters within a few steps
    assert main(["run", "fit", "--out", str(tmp_path / "run"), *QUICK, "--set", "lr=1e30",
                 "--set", "engine.max_grad_norm=None"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("divmin: training stopped: ") and "step " in err and err.count("\n") == 1


# ------------------------------------------------------------------ nothing written through a link (issue 26 s.2)
@pytest.mark.parametrize("name", [".divmin.lock", "config.json", "results.json", "fit.png"])
def test_a_link_planted_in_out_is_refused_and_its_target_kept(tmp_path, capsys, name):
    victim, out = tmp_path / "victim", tmp_path / "o"
    victim.write_text("precious\n")
    out.mkdir()
    (out / name).symlink_to(victim)
    assert main(["run", "fit", "--out", str(out), *QUICK]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{name}: it is a symbolic link" in err and "Traceback" not in err
    assert victim.read_text() == "precious\n"


def test_a_training_run_directory_linked_out_of_out_is_refused(tmp_path):
    from divmin.engine import EngineConfig
    from divmin.recipes._runs import recipe_scope, run_engine

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "teacher").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with recipe_scope("fit", tmp_path / "o"):
        run_engine(EngineConfig(), tmp_path / "o" / "student")  # a plain sub-directory is fine
        with pytest.raises(OSError, match="teacher: it is a symbolic link"):
            run_engine(EngineConfig(), tmp_path / "o" / "teacher")
        with pytest.raises(OSError, match="teacher: it is a symbolic link"):
            run_engine(EngineConfig(), tmp_path / "o" / "teacher" / "seed_0")


# ------------------------------------------------------------------ one line and exit 2 (issue 26 s.5)
def _deny_writes_under(monkeypatch, root, calls=("open", "mkdir")):
    """Make the OS refuse writes under ``root`` as a read-only directory does for a non-root user (the
    tests run as root, for whom chmod does not bite)."""
    import errno
    import os

    root = str(root)

    def denied(real):
        def call(path, *args, **kwargs):
            p = os.path.abspath(os.fspath(path)) if isinstance(path, (str, bytes, os.PathLike)) else ""
            flags = args[0] if real is os.open and args else 0
            writes = real is not os.open or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            if isinstance(p, str) and (p == root or p.startswith(root + os.sep)) and writes:
                raise PermissionError(errno.EACCES, "Permission denied", p)
            return real(path, *args, **kwargs)
        return call

    for name in calls:
        monkeypatch.setattr(os, name, denied(getattr(os, name)))


@pytest.mark.parametrize("where", ["out", "parent", "checkpoints"])
def test_a_read_only_directory_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, where):
    out = tmp_path / "parent" / "o"
    if where != "parent":
        out.mkdir(parents=True)
    if where == "checkpoints":
        (out / "checkpoints").mkdir()
    denied = {"out": out, "parent": tmp_path / "parent", "checkpoints": out / "checkpoints"}[where]
    if where == "parent":
        (tmp_path / "parent").mkdir()
    _deny_writes_under(monkeypatch, denied)
    assert main(["run", "fit", "--out", str(out), *QUICK, "--set", "engine.checkpoint_every=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Permission denied" in err and str(denied) in err and "Traceback" not in err


def test_train_into_a_read_only_out_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    out.mkdir()
    _deny_writes_under(monkeypatch, out)
    assert main(["train", "kd", "--out", str(out), "--set", "kd.engine.max_steps=1", "--set", "kd.engine.progress=False"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Permission denied" in err


def test_resume_with_every_checkpoint_damaged_is_one_line_and_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "fit", "--out", str(out), *QUICK, "--set", "engine.checkpoint_every=2"]) == 0
    for f in out.glob("checkpoints/step_*/models/*.safetensors"):
        f.write_bytes(f.read_bytes()[:-8])
    capsys.readouterr()
    assert main(["run", "fit", "--out", str(out), *QUICK, "--set", "engine.checkpoint_every=2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("divmin: error: no intact checkpoint") and err.count("\n") == 1


def test_a_divergence_of_the_wrong_kind_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["run", "speech-egg", "--out", str(tmp_path / "run"), "--set", "speech.divergence=sinkhorn"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`speech.divergence`" in err and "kind" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before anything is written


# ------------------------------------------------------------------ --resume continues the saved run (issue 26 s.3)
def test_run_resume_reuses_the_saved_config_and_refuses_changing_it(tmp_path, capsys, monkeypatch):
    import json

    out = tmp_path / "run"
    argv = ["run", "fit", "--out", str(out), *QUICK, "--set", "engine.max_steps=6", "--set", "engine.checkpoint_every=2",
            "--set", "lr=0.02"]
    straight = tmp_path / "straight"
    assert main(["run", "fit", "--out", str(straight), *argv[4:]]) == 0
    from divmin.engine._trainer import Trainer

    real = trainer_step = Trainer._train_step

    def interrupt_at_4(self, run, step):
        if step == 4:
            raise KeyboardInterrupt
        return real(self, run, step)

    monkeypatch.setattr("divmin.engine._trainer.Trainer._train_step", interrupt_at_4)
    assert main(argv) == 130
    hint = capsys.readouterr().err.split("continue with: ")[1].strip()
    monkeypatch.setattr("divmin.engine._trainer.Trainer._train_step", trainer_step)
    assert main(["run", "fit", "--out", str(out), "--set", "lr=0.05", "--resume"]) == 2  # a change: refused
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--set change lr: drop them" in err
    assert main(hint.split()[1:]) == 0  # the printed line, literally: no --set at all
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["lr"] == 0.02 and saved["engine"]["max_steps"] == 6
    a, b = (json.loads((d / "results.json").read_text())["rows"] for d in (straight, out))
    assert a == b


# recipes whose defaults are their full size today: their --full only restates them (issue 30 fixed fit's;
# these four need presets chosen by their owners). A recipe leaves this set when its --full changes something.
FULL_IS_DEFAULT = {"fdistill-images", "fdpo-lm", "kd-cls", "kd-lm"}


@pytest.mark.parametrize("name", [n for n in available_recipes()
                                  if divmin.recipes.get_recipe(n).full_size and n not in FULL_IS_DEFAULT])
def test_a_full_preset_changes_the_defaults(name):
    rec = divmin.recipes.get_recipe(name)
    full = parse_overrides(rec.config_cls(), rec.full_size)
    assert full != rec.config_cls(), f"{name}: --full is the defaults"


def test_readme_examples_do_not_reuse_the_setup_run_directory():
    """The README's setup writes runs/fit; a later example into the same --out is refused (exit 2)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    setup = re.search(r"## Setup[^\n]*\n+```bash\n(.*?)```", readme, flags=re.S).group(1)
    used = set(re.findall(r"divmin run \S+ --out (\S+)", setup))
    rest = readme[readme.index(setup) + len(setup):]
    later = [line for line in rest.splitlines() if re.search(r"divmin run \S+ --out ", line) and "--resume" not in line]
    assert later and used == {"runs/fit"}
    assert all(re.search(r"--out (\S+)", line).group(1) not in used for line in later), later


def test_the_legend_explains_a_summary_entry_that_its_name_does_not():
    from divmin.recipes import RecipeResult, column_legend

    result = RecipeResult(["model", "nfe", "gen_ppl"], [], [], {"target": {"gen_ppl": 18.36}, "true_ppl": 17.0})
    legend = column_legend("didi-synthetic", result).splitlines()
    at = legend.index("summary entries:")
    assert legend[at + 1].startswith("  target: the teacher's own samples") and "distillation target" in legend[at + 1]
    assert legend[at + 2].startswith("  true_ppl: ")
    assert "summary entries:" not in column_legend("fit", RecipeResult(["divergence"], [], [], {"modes_in_target": 3}))
