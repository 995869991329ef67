"""``divmin distill cache``: the CLI writes the cache the API writes, and 2 torchrun processes write the same files."""

from __future__ import annotations

import json

import pytest
import torch

from divmin.cli import main
from divmin.distill import TeacherCache, cache_teacher
from divmin.lm import tiny_gpt2

from .._torchrun import torchrun


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    tiny_gpt2(30, seed=3, n_layer=1, n_embd=16, n_positions=16).save_pretrained(d / "teacher")
    g = torch.Generator().manual_seed(0)
    rows = [{"prompt_ids": torch.randint(2, 30, (2,), generator=g).tolist(),
             "completion_ids": torch.randint(2, 30, (1 + i % 4,), generator=g).tolist()} for i in range(21)]
    (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d, rows


def _args(d, out, *extra):
    return ["distill", "cache", "--teacher", str(d / "teacher"), "--data", str(d / "rows.jsonl"), "--out", str(out),
            "--top-k", "6", "--rows-per-shard", "4", "--batch-size", "3", "--device", "cpu", *map(str, extra)]


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_cli_writes_what_the_api_writes(setup, capsys):
    from transformers import AutoModelForCausalLM

    d, rows = setup
    assert main(_args(d, d / "cli", "--temperature", "2")) == 0
    assert "wrote" in capsys.readouterr().out
    teacher = AutoModelForCausalLM.from_pretrained(d / "teacher")
    cache_teacher(teacher, rows, d / "api", top_k=6, temperature=2.0, rows_per_shard=4, batch_size=3,
                  teacher_name=str(d / "teacher"))
    assert _files(d / "cli") == _files(d / "api")
    assert TeacherCache(d / "cli").temperature == 2.0


def test_cli_refuses_bad_values_with_one_line(setup, capsys):
    d, _ = setup
    assert main(_args(d, d / "bad", "--dtype", "int4")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("divmin: error: `dtype`: unknown cache encoding 'int4'") and "\n" not in err
    assert main(_args(d, d / "bad", "--data", d / "missing.jsonl")) == 2
    assert "is neither a file nor a directory" in capsys.readouterr().err


def test_two_torchrun_processes_write_the_one_process_cache(setup):
    d, _ = setup
    assert main(_args(d, d / "one")) == 0
    stdout = torchrun("-m", "divmin", *_args(d, d / "two"))
    assert stdout.count("wrote") == 1  # rank 0 reports
    assert _files(d / "two") == _files(d / "one")
