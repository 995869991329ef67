"""Fuzz the teacher cache and the export reader at their boundary: a correct value or a clear error, never a
traceback from deep inside, never NaN from finite input, never unbounded work (issue 26 s.4).

See ``_harness.py`` for the rule. Seeded and bounded (``FUZZ``), so CI runs the same cases.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

from divmin.distill import TeacherCache, cache_teacher
from divmin.lm import tiny_gpt2
from divmin.train import exportable_module, load_exported
from divmin.engine import export_module

from ._harness import FUZZ, classify

OK = ("value", "clear error")
V, POSITIONS = 12, 10
_TEACHER = tiny_gpt2(V, seed=0, n_layer=1, n_embd=8, n_positions=POSITIONS)


@exportable_module("fuzz_linear")
def _fuzz_linear(n_in: int, n_out: int) -> nn.Module:
    return nn.Linear(n_in, n_out)


ids = st.integers(-3, V + 3)
rows = st.lists(st.fixed_dictionaries({"prompt_ids": st.lists(ids, min_size=0, max_size=7),
                                       "completion_ids": st.lists(ids, min_size=0, max_size=7)}),
                min_size=0, max_size=5)
valid_rows = st.lists(st.fixed_dictionaries({"prompt_ids": st.lists(st.integers(0, V - 1), min_size=1, max_size=4),
                                             "completion_ids": st.lists(st.integers(0, V - 1), max_size=4)}),
                      min_size=1, max_size=5)


def _cache_and_read(dataset, top_k, temperature, dtype, batch_size, rows_per_shard, verify):
    """Write a cache and read every row back: the cached log-probs (NaN-free unless the input held NaN)."""
    with tempfile.TemporaryDirectory() as d:
        manifest = cache_teacher(_TEACHER, dataset, d, top_k=top_k, temperature=temperature, dtype=dtype,
                                 batch_size=batch_size, rows_per_shard=rows_per_shard)
        assert manifest["rows"] == len(dataset)
        cache = TeacherCache(d, verify=verify)
        out = cache(range(len(cache)))
        return out.log_probs.clamp(min=-1e4)  # -inf marks fewer than k candidates (k > V): by design


@FUZZ
@given(data=st.data(), top_k=st.sampled_from([1, 3, V, V + 5, 0, -1, 2.5, True, "3"]),
       temperature=st.sampled_from([1.0, 0.5, 3.0, 1e-3, 0.0, -1.0, math.nan, math.inf, "1"]),
       dtype=st.sampled_from(["int8", "float16", "float32", "int4", None]),
       batch_size=st.sampled_from([1, 2, 16, 0]), rows_per_shard=st.sampled_from([1, 2, 64, 0, -2]),
       verify=st.booleans())
def test_cache_teacher(data, top_k, temperature, dtype, batch_size, rows_per_shard, verify):
    dataset = data.draw(valid_rows if data.draw(st.booleans()) else rows)
    if data.draw(st.booleans()):  # half the cases with usable settings, so that values are checked too
        top_k = data.draw(st.sampled_from([1, 3, V, V + 5]))
        temperature = data.draw(st.sampled_from([1.0, 0.5, 3.0, 1e-3]))
        dtype = data.draw(st.sampled_from(["int8", "float16", "float32"]))
        batch_size, rows_per_shard = data.draw(st.sampled_from([1, 2, 16])), data.draw(st.sampled_from([1, 2, 64]))
    outcome = classify("cache_teacher", _cache_and_read, dataset, top_k, temperature, dtype, batch_size,
                       rows_per_shard, verify)
    assert outcome in OK, (dataset, top_k, temperature, dtype, batch_size, rows_per_shard, outcome)


def _damaged_cache_read(d: Path, damage: str, verify: bool) -> torch.Tensor:
    files = {"manifest": d / "manifest.json", "shard": d / "shard-00000.safetensors"}
    if damage == "truncate-shard":
        files["shard"].write_bytes(files["shard"].read_bytes()[:-7])
    elif damage == "empty-shard":
        files["shard"].write_bytes(b"")
    elif damage == "delete-shard":
        files["shard"].unlink()
    elif damage == "garbage-manifest":
        files["manifest"].write_text("x\n")
    elif damage == "list-manifest":
        files["manifest"].write_text("[1, 2]")
    elif damage == "other-format":
        m = json.loads(files["manifest"].read_text())
        files["manifest"].write_text(json.dumps({**m, "format": "v0"}))
    elif damage == "no-manifest":
        files["manifest"].unlink()
    cache = TeacherCache(d, verify=verify)
    return cache(range(len(cache))).log_probs


@FUZZ
@given(damage=st.sampled_from(["none", "truncate-shard", "empty-shard", "delete-shard", "garbage-manifest",
                               "list-manifest", "other-format", "no-manifest"]), verify=st.booleans())
def test_teacher_cache_on_damaged_files(damage, verify):
    with tempfile.TemporaryDirectory() as d:
        cache_teacher(_TEACHER, [{"prompt_ids": [1, 2], "completion_ids": [3, 4]}] * 3, d, top_k=3)
        outcome = classify("TeacherCache", _damaged_cache_read, Path(d), damage, verify)
    assert outcome in OK, (damage, verify, outcome)


_CONFIGS = st.sampled_from([
    None, "x", "[1, 2]", "{}", '{"divmin_module": "fuzz_linear"}',
    '{"divmin_module": "fuzz_linear", "args": {"n_in": 3, "n_out": 2}}',
    '{"divmin_module": "fuzz_linear", "args": {"n_in": 4, "n_out": 2}}',
    '{"divmin_module": "fuzz_linear", "args": {"n_in": 1000000, "n_out": 1000000}}',
    '{"divmin_module": "fuzz_linear", "args": {"n_in": -3, "n_out": 2}}',
    '{"divmin_module": "fuzz_linear", "args": {"wrong": 1}}',
    '{"divmin_module": "fuzz_linear", "args": [3, 2]}',
    '{"divmin_module": "fuzz_linear", "args": null}',
    '{"divmin_module": "nope", "args": {}}',
    '{"divmin_module": 7, "args": {}}',
])
_WEIGHTS = st.sampled_from(["good", "none", "garbage", "truncated", "other-shapes", "extra-tensor"])


def _export_dir(root: Path, config: str | None, weights: str) -> Path:
    final = Path(export_module(_fuzz_linear(3, 2), "fuzz_linear", {"n_in": 3, "n_out": 2}, root)[0]).parent
    w = final / "model.safetensors"
    if weights == "none":
        w.unlink()
    elif weights == "garbage":
        w.write_bytes(b"\x00\x01garbage")
    elif weights == "truncated":
        w.write_bytes(w.read_bytes()[:-5])
    elif weights == "other-shapes":
        save_file({"weight": torch.zeros(5, 5), "bias": torch.zeros(5)}, str(w))
    elif weights == "extra-tensor":
        save_file({"weight": torch.zeros(2, 3), "bias": torch.zeros(2), "more": torch.zeros(1)}, str(w))
    if config is None:
        (final / "config.json").unlink()
    else:
        (final / "config.json").write_text(config)
    return final


@FUZZ
@given(config=_CONFIGS, weights=_WEIGHTS, where=st.sampled_from(["final", "missing", "file", "int", "none"]),
       intact=st.integers(0, 3))
def test_load_exported(config, weights, where, intact):
    if intact == 0:  # a quarter of the cases an intact export, so that values are checked too
        config, weights, where = '{"divmin_module": "fuzz_linear", "args": {"n_in": 3, "n_out": 2}}', "good", "final"
    with tempfile.TemporaryDirectory() as d:
        final = _export_dir(Path(d), config, weights)
        path = {"final": final, "missing": Path(d) / "nowhere", "file": final / "config.json" if config else final,
                "int": 3, "none": None}[where]

        def load():
            module = load_exported(path)
            return module(torch.ones(1, module.in_features))  # it computes: a finite output from finite input

        outcome = classify("load_exported", load)
    assert outcome in OK, (config, weights, where, outcome)
