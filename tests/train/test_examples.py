"""Every example config parses and validates; the example data files load in their method's format."""

from pathlib import Path

import pytest
import yaml

from divmin.engine._overrides import jsonable

from divmin.train import available_methods, config_from, get_method, tiny_tokenizer
from divmin.train._data import check_columns, kd_examples, load_rows

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "examples" / "configs").glob("*.yaml"))


def _method(path: Path) -> str:
    return path.stem.split("-")[0]  # kd.yaml, kd-qwen-lora.yaml -> kd


def _subset(got, want) -> bool:
    """Whether the nested dict ``want`` (a YAML file's keys) holds the values of ``got`` at its keys."""
    if isinstance(want, dict) and isinstance(got, dict):
        return all(k in got and _subset(got[k], v) for k, v in want.items())
    return got == want


def test_there_is_an_example_per_method():
    assert {_method(p) for p in CONFIGS} == set(available_methods())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_validates(path):
    method = _method(path)
    cfg = config_from(method, str(path), [])
    assert isinstance(cfg, get_method(method).config_cls)
    # each key of the file landed in the config
    for key, value in yaml.safe_load(path.read_text()).items():
        assert _subset(jsonable(getattr(cfg, key)), value), key


def test_example_data_in_the_tiny_vocabulary():
    tok = tiny_tokenizer()
    for name in ("count.jsonl", "count_chat.jsonl"):
        rows = kd_examples(load_rows(ROOT / "examples" / "data" / name), tok, max_prompt_length=64,
                           max_completion_length=64)
        assert all(tok.unk_token_id not in r["prompt_ids"] + r["completion_ids"] for r in rows), name
    prefs = load_rows(ROOT / "examples" / "data" / "count_prefs.jsonl")
    check_columns(prefs, (("prompt", "chosen", "rejected"),), key="data", method="fdpo")
    assert all(tok.unk_token_id not in tok(" ".join(r.values()))["input_ids"] for r in prefs)
    texts = load_rows(ROOT / "examples" / "data" / "count_text.jsonl")
    assert all(tok.unk_token_id not in tok(r["text"])["input_ids"] for r in texts)
