"""divmin train end to end on the tiny defaults: train, export, reload, re-export from a checkpoint."""

import json

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from divmin.cli import main
from divmin.train import config_from, export_run, load_exported, tiny_lm, tiny_tokenizer, train

def quiet(method):
    return [f"{method}.engine.progress=False", f"{method}.engine.tensorboard=False", f"{method}.engine.log_every=2"]


def _logits(model, ids):
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


IDS = torch.tensor([[5, 6, 7, 8, 9, 10]])


@pytest.mark.parametrize("method", ["kd", "fdpo"])
def test_train_export_reload_gives_the_same_logits(tmp_path, method):
    out = tmp_path / method
    init = _logits(tiny_lm("student"), IDS)
    run = train(method, config_from(method, None, [f"{method}.engine.max_steps=3", f"{method}.lr=0.01", *quiet(method)]), out)
    trained = _logits(run.model, IDS)
    assert not torch.allclose(trained, init)  # it trained
    reloaded = AutoModelForCausalLM.from_pretrained(out / "final")
    torch.testing.assert_close(_logits(reloaded, IDS), trained, rtol=0, atol=0)
    tok = AutoTokenizer.from_pretrained(out / "final")
    assert tok("count from one :")["input_ids"] == tiny_tokenizer()("count from one :")["input_ids"]
    assert {p.name for p in run.files} >= {"config.json", "model.safetensors", "tokenizer.json"}
    # `divmin export RUN_DIR` rebuilds the model from train_config.yaml and the last checkpoint
    before = load_file(out / "final" / "model.safetensors")
    (out / "final" / "model.safetensors").unlink()
    export_run(out)
    after = load_file(out / "final" / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.fixture(scope="module")
def local_models(tmp_path_factory):
    """A tiny student and teacher saved with save_pretrained, to be named by local path."""
    root = tmp_path_factory.mktemp("models")
    for role in ("student", "teacher"):
        tiny_lm(role, seed=7).save_pretrained(root / role)
        tiny_tokenizer().save_pretrained(root / role)
    return root


def test_cli_kd_with_models_named_by_local_path(tmp_path, local_models, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {local_models / 'student'}\nteacher: {local_models / 'teacher'}\n"
                   "kd:\n  divergence: js\n  lr: 0.01\n  engine: {max_steps: 2, progress: false, tensorboard: false}\n")
    out = tmp_path / "run"
    assert main(["train", "kd", "--config", str(cfg), "--out", str(out), "--set", "kd.temperature=2"]) == 0
    printed = capsys.readouterr().out
    assert f"exported {out / 'final'}: config.json" in printed and "model.safetensors" in printed
    recorded = (out / "train_config.yaml").read_text()
    assert "method: kd" in recorded and "temperature: 2.0" in recorded and "divergence: js" in recorded
    start = AutoModelForCausalLM.from_pretrained(local_models / "student")
    final = load_exported(out / "final")
    assert final.config.n_embd == start.config.n_embd and not torch.equal(_logits(final, IDS), _logits(start, IDS))


def test_train_and_export_print_no_transformers_bars_and_export_names_its_checkpoint(tmp_path, local_models,
                                                                                      capsys):
    out = tmp_path / "run"
    argv = ["train", "kd", "--out", str(out), "--set", f"model={local_models / 'student'}",
            "--set", f"teacher={local_models / 'teacher'}", "--set", "kd.engine.max_steps=2",
            "--set", "kd.engine.checkpoint_every=1", "--set", "kd.engine.tensorboard=False"]
    assert main(argv) == 0
    assert main(["export", str(out)]) == 0
    printed = capsys.readouterr()
    both = printed.out + printed.err
    assert "Loading weights" not in both and "Writing model shards" not in both
    ckpt = out / "checkpoints" / "step_0000002"
    assert f"exported {out / 'final'} from {ckpt}: config.json" in printed.out.splitlines()[-1]
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()  # silenced for divmin's calls only


def test_lora_merged_at_export(tmp_path):
    cfg = config_from("fdpo", None, ["lora.r=4", "lora.alpha=8", "merge_lora=True", "fdpo.reference=adapter",
                                     "fdpo.lr=0.01", "fdpo.engine.max_steps=2", *quiet("fdpo")])
    run = train("fdpo", cfg, tmp_path / "run")
    assert type(run.model).__name__ == "PeftModelForCausalLM"
    final = tmp_path / "run" / "final"
    assert not (final / "adapter_config.json").exists()  # merged: a plain model
    reloaded = AutoModelForCausalLM.from_pretrained(final)
    torch.testing.assert_close(_logits(reloaded, IDS), _logits(run.model, IDS), rtol=1e-5, atol=1e-5)


def test_lora_adapter_alone_without_merge(tmp_path):
    cfg = config_from("kd", None, ["lora.r=2", "kd.lr=0.01", "kd.engine.max_steps=2", *quiet("kd")])
    run = train("kd", cfg, tmp_path / "run")
    final = tmp_path / "run" / "final"
    assert (final / "adapter_config.json").is_file() and (final / "adapter_model.safetensors").is_file()
    # the adapter's tensors are the trained LoRA weights
    saved = load_file(final / "adapter_model.safetensors")
    lora = {k: v for k, v in run.model.state_dict().items() if "lora_" in k}
    assert len(saved) == len(lora) > 0


def test_a_model_not_available_offline_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    argv = ["train", "fdpo", "--out", str(tmp_path / "o"), "--set", "model=divmin-test/no-such-model"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("divmin: error: model 'divmin-test/no-such-model' could not be loaded")
    assert err.count("\n") == 1 and "HF_HUB_OFFLINE" in err


def test_a_model_name_with_no_network_fails_at_once_in_one_line(tmp_path):
    """No HF_HUB_OFFLINE and a Hub that cannot be reached (a closed local port stands for "no network"):
    one line, and no huggingface_hub retries (they took about a minute and a dozen lines)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", PYTHONPATH=str(src), HF_HOME=str(tmp_path / "hf"))
    argv = ["train", "kd", "--out", str(tmp_path / "o"), "--set", "model=divmin-test/no-such-model",
            "--set", "teacher=divmin-test/no-such-model"]
    proc = subprocess.run([sys.executable, "-m", "divmin", *argv], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["divmin: error: model 'divmin-test/no-such-model' could not be loaded: "
                                        "not a local directory and not in the Hugging Face cache, and the Hub "
                                        "cannot be reached from here"], proc.stderr[-2000:]


def test_fdpg_runs_and_exports(tmp_path):
    run = train("fdpg", config_from("fdpg", None, ["fdpg.engine.max_steps=2", "fdpg.samples_per_context=4",
                                                   "fdpg.max_new_tokens=4", *quiet("fdpg")]), tmp_path / "run")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
    torch.testing.assert_close(_logits(reloaded, IDS), _logits(run.model, IDS), rtol=0, atol=0)


def test_fdistill_exports_a_module_that_load_exported_rebuilds(tmp_path):
    cfg = config_from("fdistill", None, ["fdistill.engine.max_steps=2", "fdistill.batch_size=32", "fdistill.eval_samples=64",
                                         "hidden=16", *quiet("fdistill")])
    run = train("fdistill", cfg, tmp_path / "run")
    spec = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert spec == {"divmin_module": "mlp_generator", "args": {"dim": 2, "hidden": 16, "depth": 3, "init_scale": 3.0}}
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    rebuilt = load_exported(tmp_path / "run" / "final")
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(z), run.model(z), rtol=0, atol=0)
    assert run.model is run.trainer.generator_ema
    # re-exported from the checkpoint (the EMA generator's weights), it is the same module
    (tmp_path / "run" / "final" / "model.safetensors").unlink()
    export_run(tmp_path / "run")
    with torch.no_grad():
        torch.testing.assert_close(load_exported(tmp_path / "run" / "final")(z), run.model(z), rtol=0, atol=0)


def test_export_command(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2  # not a run directory: one line
    assert "no train_config.yaml" in capsys.readouterr().err
    out = tmp_path / "run"
    train("kd", config_from("kd", None, ["kd.engine.max_steps=1", *quiet("kd")]), out)
    capsys.readouterr()
    assert main(["export", str(out)]) == 0
    ckpt = out / "checkpoints" / "step_0000001"
    assert capsys.readouterr().out.startswith(f"exported {out / 'final'} from {ckpt}: config.json")


def test_a_used_run_directory_is_refused_and_resume_restores_the_final_model(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "kd", "--out", str(out), *[a for s in ["kd.engine.max_steps=2", *quiet("kd")] for a in ("--set", s)]]
    assert main(argv) == 0
    recorded = (out / "train_config.yaml").read_text()
    first = load_file(out / "final" / "model.safetensors")
    assert main([*argv, "--set", "kd.lr=0.5"]) == 2  # refused before anything is replaced
    assert "--resume" in capsys.readouterr().err
    assert (out / "train_config.yaml").read_text() == recorded
    (out / "final" / "model.safetensors").unlink()
    assert main([*argv, "--resume"]) == 0  # a finished run resumes to its final weights
    again = load_file(out / "final" / "model.safetensors")
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_the_printed_resume_line_finishes_the_interrupted_run_with_its_own_config(tmp_path, capsys, monkeypatch):
    """Ctrl-C, then the line divmin prints, run literally: the run's saved config (not the defaults) is
    continued to its end and the export equals an uninterrupted run's (issue 26 s.3)."""
    from divmin.engine._trainer import Trainer

    sets = ["kd.engine.max_steps=6", "kd.engine.checkpoint_every=2", "kd.lr=0.003", *quiet("kd")]
    argv = lambda out: ["train", "kd", "--out", str(out), *[a for s in sets for a in ("--set", s)]]  # noqa: E731
    assert main(argv(tmp_path / "straight")) == 0
    real = Trainer._train_step

    def interrupt_at_4(self, run, step):
        if step == 4:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
        return real(self, run, step)

    monkeypatch.setattr(Trainer, "_train_step", interrupt_at_4)
    out = tmp_path / "run"
    assert main(argv(out)) == 130
    hint = capsys.readouterr().err.strip().split("continue with: ")[1]
    assert hint == f"divmin train kd --out {out} --resume"
    monkeypatch.setattr(Trainer, "_train_step", real)
    recorded = (out / "train_config.yaml").read_text()
    assert main([*hint.split()[1:], "--set", "kd.lr=0.5"]) == 2  # a change of the run: refused, naming the key
    assert "change kd.lr:" in capsys.readouterr().err and (out / "train_config.yaml").read_text() == recorded
    assert main(hint.split()[1:]) == 0
    assert "max_steps: 6" in (out / "train_config.yaml").read_text()
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()][-1] == 6
    a, b = (load_file(d / "final" / "model.safetensors") for d in (tmp_path / "straight", out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_may_extend_max_steps_but_not_shorten_it(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "kd", "--out", str(out), *[a for s in ["kd.engine.max_steps=2", *quiet("kd")] for a in ("--set", s)]]
    assert main(argv) == 0
    assert main(["train", "kd", "--out", str(out), "--resume", "--set", "kd.engine.max_steps=1"]) == 2
    assert "kd.engine.max_steps (may only grow, 2 -> 1)" in capsys.readouterr().err
    assert main(["train", "kd", "--out", str(out), "--resume", "--set", "kd.engine.max_steps=4"]) == 0
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [2, 4]


def test_named_models_load_with_the_dtype_keyword_transformers_expects(tmp_path, monkeypatch):
    """transformers >= 4.56 warns on every load given `torch_dtype`; older ones only know it (issue 26 s.3)."""
    import transformers
    from packaging.version import Version

    from divmin.lm import load_causal_lm

    tiny_lm().save_pretrained(tmp_path / "m")
    model = load_causal_lm(tmp_path / "m", torch_dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16  # the dtype reached the load
    seen = {}

    def record(name, **kwargs):
        seen.update(kwargs)
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", record)
    load_causal_lm(tmp_path / "m", torch_dtype="float16")
    new = Version(transformers.__version__).release >= (4, 56)
    assert seen[("dtype" if new else "torch_dtype")] == torch.float16
    assert ("torch_dtype" if new else "dtype") not in seen
    monkeypatch.setattr(transformers, "__version__", "4.45.0")
    load_causal_lm(tmp_path / "m", torch_dtype="float16")
    assert seen["torch_dtype"] == torch.float16


@pytest.mark.parametrize("name", ["train_config.yaml", "final", "metrics.jsonl"])
def test_a_link_in_the_run_directory_is_refused_and_its_target_kept(tmp_path, capsys, name):
    victim, out = tmp_path / "victim", tmp_path / "run"
    victim.mkdir() if name == "final" else victim.write_text("precious\n")
    out.mkdir()
    (out / name).symlink_to(victim)
    argv = ["train", "kd", "--out", str(out), *[a for s in ["kd.engine.max_steps=1", *quiet("kd")] for a in ("--set", s)]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{name}: it is a symbolic link" in err and err.count("\n") == 1
    assert (list(victim.iterdir()) == []) if name == "final" else victim.read_text() == "precious\n"


def test_load_exported_names_the_file_for_a_missing_directory_or_a_malformed_config(tmp_path):
    with pytest.raises(ValueError, match=r"`path` .*nowhere: no such directory"):
        load_exported(tmp_path / "nowhere")  # a local path, never a Hub lookup
    train("fdistill", config_from("fdistill", None, ["fdistill.engine.max_steps=1", *quiet("fdistill")]), tmp_path / "run")
    config = tmp_path / "run" / "final" / "config.json"
    spec = json.loads(config.read_text())
    config.write_text(json.dumps({"divmin_module": spec["divmin_module"]}))  # no "args"
    with pytest.raises(ValueError, match=r"config.json's 'args' must be a JSON object"):
        load_exported(tmp_path / "run" / "final")
    config.write_text("{not json")
    with pytest.raises(ValueError, match=r"`path`: .*final/config.json is not valid JSON"):
        load_exported(tmp_path / "run" / "final")
