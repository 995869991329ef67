"""Data for divmin train: JSONL / CSV / datasets directories in TRL's formats, named errors."""

import csv
import json

import datasets
import pytest

from divmin.train import tiny_tokenizer
from divmin.data import check_columns, kd_examples, load_rows, prompts_of

ROWS = [{"prompt": "count from one :", "completion": "two three"},
        {"prompt": "what comes after two :", "completion": "three"}]


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_jsonl_csv_and_datasets_directory_give_the_same_rows(tmp_path):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n")
    with (tmp_path / "d.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, ["prompt", "completion"])
        w.writeheader()
        w.writerows(ROWS)
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dd"))
    for name in ("d.jsonl", "d.csv", "ds", "dd"):
        assert load_rows(tmp_path / name) == ROWS, name


def test_loading_errors_name_the_key_and_the_place(tmp_path):
    with pytest.raises(ValueError, match="`data`: no file or directory"):
        load_rows(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2 is not valid JSON"):
        load_rows(tmp_path / "bad.jsonl", key="data")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match=".jsonl, .json or .csv"):
        load_rows(tmp_path / "x.txt")
    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match=r"splits \['test'\]"):
        load_rows(tmp_path / "dd", key="eval_data")


def test_missing_column_is_named():
    with pytest.raises(ValueError, match=r"`data`: missing column\(s\) \['rejected'\]: fdpo needs prompt/chosen/rejected"):
        check_columns([{"prompt": "a", "chosen": "b"}], (("prompt", "chosen", "rejected"),), key="data",
                      method="fdpo")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['completion'\].*prompt/completion or messages"):
        kd_examples([{"prompt": "one"}], tiny_tokenizer(), max_prompt_length=8, max_completion_length=8)


def test_prompt_completion_tokens_eos_and_truncation():
    tok = tiny_tokenizer()
    out = kd_examples(ROWS, tok, max_prompt_length=3, max_completion_length=2)
    # prompts keep their last 3 tokens; completions get EOS, then keep their first 2
    assert out[0] == {"prompt_ids": _ids(tok, "from one :"), "completion_ids": _ids(tok, "two three")}
    assert out[1] == {"prompt_ids": _ids(tok, "after two :"), "completion_ids": _ids(tok, "three") + [tok.eos_token_id]}


def test_messages_without_a_chat_template_are_joined_as_text():
    tok = tiny_tokenizer()
    msgs = [{"role": "user", "content": "count from one"}, {"role": "assistant", "content": "two three"}]
    got = kd_examples([{"messages": msgs}], tok, max_prompt_length=64, max_completion_length=64)[0]
    want = kd_examples([{"prompt": "user : count from one\n", "completion": "assistant : two three\n"}], tok,
                       max_prompt_length=64, max_completion_length=64)[0]
    assert got == want
    # the conversational prompt/completion format gives the same
    pc = kd_examples([{"prompt": msgs[:1], "completion": msgs[1:]}], tok, max_prompt_length=64,
                     max_completion_length=64)[0]
    assert pc == want


def test_messages_with_a_chat_template_use_it():
    tok = tiny_tokenizer()
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} [EOS] {% endfor %}"
                         "{% if add_generation_prompt %}assistant : {% endif %}")
    msgs = [{"role": "user", "content": "count from one"}, {"role": "assistant", "content": "two three"}]
    got = kd_examples([{"messages": msgs}], tok, max_prompt_length=64, max_completion_length=64)[0]
    assert got["prompt_ids"] == _ids(tok, "user : count from one [EOS] assistant :")
    assert got["completion_ids"] == _ids(tok, "two three [EOS]")  # the template's own end, no extra EOS


def test_bad_messages_are_named():
    with pytest.raises(ValueError, match="row 0 field 'messages'"):
        kd_examples([{"messages": [{"role": "user"}]}], tiny_tokenizer(), max_prompt_length=8,
                    max_completion_length=8)


def test_prompts_are_deduplicated_in_order():
    rows = [{"prompt": "b"}, {"prompt": "a"}, {"prompt": "b"}]
    assert prompts_of(rows, tiny_tokenizer()) == ["b", "a"]
