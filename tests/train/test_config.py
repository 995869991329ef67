"""Train configs: YAML == --set, one clear line per mistake, the commented example round-trips."""

import dataclasses

import pytest
import yaml

from divmin.cli import main
from divmin.divergences import divergence
from divmin.engine import field_docs
from divmin.train import available_methods, config_from, get_method, load_config, print_config


def _yaml(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("method, text, sets", [
    ("kd", "kd:\n  divergence: js\n  temperature: 2\n  engine:\n    max_steps: 7\n    lr_schedule: cosine\n"
           "lora: {r: 4, target_modules: [c_attn]}\n",
     ["kd.divergence=js", "kd.temperature=2", "lora.r=4", "lora.target_modules=['c_attn']", "kd.engine.max_steps=7",
      "kd.engine.lr_schedule=cosine"]),
    ("fdpo", "fdpo: {beta: 0.3, divergence: 'alpha:0.5', engine: {seed: 3}}\ndata: prefs.jsonl\n",
     ["fdpo.beta=0.3", "fdpo.divergence=alpha:0.5", "data=prefs.jsonl", "fdpo.engine.seed=3"]),
    ("fdistill", "means: [[0, 1], [2, 3]]\nfdistill:\n  adam_betas: [0.5, 0.9]\n",
     ["means=((0, 1), (2, 3))", "fdistill.adam_betas=(0.5, 0.9)"]),
])
def test_yaml_and_set_give_the_same_config(tmp_path, method, text, sets):
    from_yaml = config_from(method, _yaml(tmp_path, text), [])
    from_set = config_from(method, None, sets)
    assert from_yaml == from_set
    assert from_yaml != get_method(method).config_cls()  # the file changed something


def test_set_wins_over_the_file_and_types_are_coerced(tmp_path):
    cfg = config_from("kd", _yaml(tmp_path, "kd: {temperature: 2, lr: 1}\n"), ["kd.temperature=3"])
    assert cfg.kd.temperature == 3.0 and isinstance(cfg.kd.lr, float) and cfg.kd.lr == 1.0


def _cli_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("text, key", [
    ("lr_typo: 0.1\n", "lr_typo"),  # unknown key
    ("kd: {engine: {max_stepz: 3}}\n", "kd.engine.max_stepz"),  # unknown nested key
    ("kd: {temperature: hot}\n", "kd.temperature"),  # wrong type
    ("kd: {batch_size: 2.5}\n", "kd.batch_size"),  # wrong type (int field)
    ("kd: {temperature: -1}\n", "`kd.temperature`"),  # right type, out of range: the trainer config's own check
    ("lora: {r: -2}\n", "`lora.r`"),
])
def test_a_bad_key_or_value_is_one_line_naming_it(tmp_path, capsys, text, key):
    err = _cli_error(capsys, ["train", "kd", "--config", _yaml(tmp_path, text), "--out", str(tmp_path / "o")])
    assert key in err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_the_same_error_from_set_and_from_yaml(tmp_path):
    with pytest.raises(ValueError) as a:
        config_from("kd", _yaml(tmp_path, "kd: {temperature: -1}\n"), [])
    with pytest.raises(ValueError) as b:
        config_from("kd", None, ["kd.temperature=-1"])
    assert str(a.value) == str(b.value) and "`kd.temperature`" in str(a.value)


def test_unknown_method_lists_the_valid_ones(capsys, tmp_path):
    err = _cli_error(capsys, ["train", "kdd", "--out", str(tmp_path)])
    assert "unknown train method 'kdd'" in err and all(m in err for m in available_methods())


def test_not_yaml_and_not_a_mapping(tmp_path, capsys):
    assert "not valid YAML" in _cli_error(capsys, ["train", "kd", "--config", _yaml(tmp_path, "a: [1\n"),
                                                   "--out", str(tmp_path / "o")])
    assert "mapping" in _cli_error(capsys, ["train", "kd", "--config", _yaml(tmp_path, "- 1\n- 2\n"),
                                            "--out", str(tmp_path / "o")])


def test_yaml_is_loaded_safely(tmp_path, capsys):
    text = "model: !!python/object/apply:os.system ['echo pwned']\n"
    assert "not valid YAML" in _cli_error(capsys, ["train", "kd", "--config", _yaml(tmp_path, text),
                                                   "--out", str(tmp_path / "o")])


def test_cross_field_rules():
    with pytest.raises(ValueError, match="`model` and `teacher`"):
        config_from("kd", None, ["model=gpt2"])
    with pytest.raises(ValueError, match="`kd.task` must be 'causal_lm'"):
        config_from("kd", None, ["kd.task=sequence_classification"])
    with pytest.raises(ValueError, match=r"`fdpo.reference`='adapter' needs LoRA: set `lora.r`"):
        config_from("fdpo", None, ["fdpo.reference=adapter"])
    with pytest.raises(ValueError, match="`ref_model` is not used with `fdpo.reference`"):
        config_from("fdpo", None, ["fdpo.reference=adapter", "lora.r=2", "ref_model=x"])
    with pytest.raises(ValueError, match="implicit_reward|admissible|cannot|does not"):
        config_from("fdpo", None, ["fdpo.divergence=total_variation"])


@pytest.mark.parametrize("method", available_methods())
def test_every_key_has_a_comment_and_the_example_round_trips(tmp_path, method):
    cls = get_method(method).config_cls
    comments = field_docs(cls)
    assert all(comments.get(f.name) for f in dataclasses.fields(cls)), \
        [f.name for f in dataclasses.fields(cls) if not comments.get(f.name)]
    text = print_config(method)
    assert all(f"\n{f.name}:" in text or text.startswith(f"{f.name}:") for f in dataclasses.fields(cls)
               if f.name not in {"resume"})
    # the example is a valid config that gives the defaults back
    assert load_config(cls, _yaml(tmp_path, text)) == cls()
    assert isinstance(yaml.safe_load(text), dict)


@pytest.mark.parametrize("method", available_methods())
def test_print_config_lists_user_keys_with_whole_comments(method):
    lines = print_config(method).splitlines()
    keys = [line.strip().split(":")[0] for line in lines if not line.lstrip().startswith("#")]
    assert not {"out_dir", "label", "progress", "resume"} & set(keys)  # set by --out / --resume, not by a user
    comments = [line.strip() for line in lines if line.lstrip().startswith("# ")]
    # a comment wrapped so that a word or two stand alone ("# teacher" above "teacher:") reads as a second one
    assert all(len(c) > 12 for c in comments), [c for c in comments if len(c) <= 12]
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("checkpoint_every:"))
    above = " ".join(line.strip() for line in lines[at - 3:at])
    assert "None = never" not in above and "a quarter of each run" in above
    if method == "kd":
        task = lines[next(i for i, line in enumerate(lines) if line.startswith("  task:")) - 1]
        assert '"causal_lm"' in task and '"sequence_classification"' in task and "a name in" not in task


def test_print_config_from_the_command_line(capsys):
    assert main(["train", "fdpo", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# divmin train fdpo") and "\n  beta: 0.1\n" in out and "\nref_model: null\n" in out
    tree = yaml.safe_load(out)  # the method config, nested under the method's name, with its short engine
    assert tree["fdpo"]["beta"] == 0.1 and tree["fdpo"]["engine"]["max_steps"] == 100 and "beta" not in tree


def test_divergence_objects_in_the_config_still_check():
    cfg = config_from("kd", None, ["kd.divergence=alpha:0.3"])
    assert divergence(cfg.kd.divergence).params == divergence("alpha:0.3").params


def test_keys_apply_together_whatever_their_order(tmp_path):
    # `model` alone is refused (kd needs a teacher too): applied together, the pair is accepted
    cfg = config_from("kd", _yaml(tmp_path, "kd: {engine: {max_steps: 5}}\n"), ["model=a", "teacher=b", "kd.engine.seed=2"])
    assert (cfg.model, cfg.teacher, cfg.kd.engine.max_steps, cfg.kd.engine.seed) == ("a", "b", 5, 2)
    # a key given in the file and by --set keeps the --set value
    assert config_from("kd", _yaml(tmp_path, "kd: {lr: 0.5}\n"), ["kd.lr=0.25"]).kd.lr == 0.25


@pytest.mark.parametrize("argv", [["train", "kd", "--print-config"], ["train", "list"], ["recipes"],
                                  ["recipes", "kd-lm"], ["divergences"]])
def test_listing_commands_do_not_import_transformers(argv):
    """transformers takes seconds to import (half of `--print-config`'s time): commands that only print
    configs and names must not load it (a fresh interpreter: this one has imported it already)."""
    import subprocess
    import sys

    code = ("import contextlib, io, sys\nfrom divmin.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()):\n    assert main({argv!r}) == 0\n"
            "print(sorted(m for m in ('transformers', 'peft') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]", (argv, proc.stdout)
