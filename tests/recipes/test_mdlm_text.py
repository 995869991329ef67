"""The mdlm-text recipe on tiny settings: its table, its figure, and the exact oracle of the built-in text."""

from __future__ import annotations

import json
import math

import pytest

from divmin.data import MarkovLanguage, text_blocks, word_vocab
from divmin.engine import load_tree
from divmin.eval import generative_perplexity
from divmin.lm import tiny_judge, word_tokenizer
from divmin.recipes import parse_overrides, run_recipe
from divmin.recipes.mdlm_text import MDLMTextConfig, synthetic_text

from ._figures import assert_close_lists, check_figure

QUIET = ["mdlm.engine.progress=False", "mdlm.engine.tensorboard=False", "judge.engine.progress=False",
         "judge.engine.tensorboard=False", "num_threads=1"]
TINY = QUIET + ["sentences=600", "mdlm.engine.max_steps=120", "judge.engine.max_steps=150", "samples=64",
                "mdlm.eval_samples=64", "width=32", "judge_embd=32"]


def _check_table(saved: dict, nfes: list[int], vocab_size: int) -> None:
    rows = saved["rows"]
    assert saved["columns"] == ["model", "nfe", "gen_ppl", "entropy"]
    assert [(r["model"], r["nfe"]) for r in rows] == [("held-out text", None)] + [("mdlm", n) for n in nfes]
    for r in rows:
        assert 1.0 < r["gen_ppl"] < 10 * vocab_size  # finite, and a judge worth the name is not far off uniform
        assert 0.0 < r["entropy"] <= math.log(vocab_size) + 1e-9


def test_builtin_text_table_figure_and_exact_oracle(tmp_path):
    result = run_recipe("mdlm-text", tmp_path, TINY + ["nfes=(1, 4, 16)"])
    saved = json.loads((tmp_path / "results.json").read_text())
    summary = saved["summary"]
    _check_table(saved, [1, 4, 16], summary["vocab_size"])
    assert summary["vocab_size"] == 3 + 16  # [PAD] [EOS] [UNK] and the 16 words of the chain
    # the exact perplexity of the held-out blocks is the chain's entropy rate spread over the 8 words + 1 certain EOS
    c = MDLMTextConfig()
    lang = MarkovLanguage(c.words, c.sentence_length, order=c.order, sharpness=c.sharpness, seed=c.data_seed)
    rate_ppl = math.exp(lang.entropy_rate * 8 / 9)
    assert summary["exact_valid_ppl"] == pytest.approx(rate_ppl, rel=0.05)
    judge = summary["judge_valid_ppl"]
    assert 0.97 * summary["exact_valid_ppl"] < judge < 1.3 * summary["exact_valid_ppl"]  # the truth is the floor
    assert judge == pytest.approx(saved["rows"][0]["gen_ppl"])
    assert summary["judge_within_10pct_of_exact"] == (abs(math.log(judge / summary["exact_valid_ppl"])) < math.log(1.1))
    ppl = {r["nfe"]: r["gen_ppl"] for r in saved["rows"][1:]}
    assert summary["gen_ppl_falls_with_nfe"] == (ppl[16] < ppl[1])
    assert summary["mdlm_valid_ppl_bound"] > 0.97 * summary["exact_valid_ppl"]  # a NELBO bounds the NLL from above
    figure = check_figure(tmp_path / "mdlm_text.png")
    mdlm_rows = saved["rows"][1:]
    assert figure["data"]["nfe"] == [1, 4, 16]
    assert_close_lists(figure["data"]["gen_ppl"], [r["gen_ppl"] for r in mdlm_rows])
    assert_close_lists(figure["data"]["entropy"], [r["entropy"] for r in mdlm_rows])
    assert figure["data"]["reference"] == pytest.approx({k: saved["rows"][0][k] for k in ("gen_ppl", "entropy")})
    assert saved["plots"] == [str(tmp_path / "mdlm_text.png")] and result.plots == saved["plots"]
    samples = (tmp_path / "samples.txt").read_text()
    assert "# nfe=16" in samples and "[EOS]" in samples
    assert (tmp_path / "judge" / "metrics.jsonl").stat().st_size > 0
    assert "eval/gen_ppl" in (tmp_path / "mdlm" / "metrics.jsonl").read_text()  # the judge serves MDLMTrainer too
    # the saved judge, rebuilt, scores the held-out text as the table says
    c = parse_overrides(MDLMTextConfig(), TINY)
    text, _ = synthetic_text(c)
    blocks = text_blocks(text, word_tokenizer(word_vocab(text)), block_length=c.block_length,
                         valid_fraction=c.valid_fraction, seed=c.data_seed)
    judge = tiny_judge(blocks.vocab_size, c.block_length, n_layer=c.judge_layers, n_embd=c.judge_embd)
    judge.load_state_dict(load_tree(tmp_path / "judge" / "model"))
    assert generative_perplexity(blocks.valid, judge) == pytest.approx(saved["rows"][0]["gen_ppl"], rel=1e-6)
    assert load_tree(tmp_path / "mdlm" / "model").keys() >= {"net.head.weight", "net.position"}


def test_a_user_text_file_with_a_saved_tokenizer(tmp_path):
    lines = [f"the {a} cat sat on the {b} mat ." for a in ("red", "big", "old", "shy") for b in ("blue", "flat", "wet")]
    text = tmp_path / "my.txt"
    text.write_text("\n".join(lines * 12), encoding="utf-8")
    tok_dir = tmp_path / "tok"
    word_tokenizer(word_vocab(lines)).save_pretrained(tok_dir)  # any AutoTokenizer-loadable directory works
    over = QUIET + [f"text_file={str(text)!r}", f"tokenizer={str(tok_dir)!r}", "block_length=12",
                    "mdlm.engine.max_steps=30", "judge.engine.max_steps=30", "samples=16", "mdlm.eval_samples=16",
                    "width=16", "judge_embd=16", "nfes=(1, 2)"]
    run_recipe("mdlm-text", tmp_path / "run", over)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    _check_table(saved, [1, 2], len(word_vocab(lines)))
    assert "exact_valid_ppl" not in saved["summary"]  # no known law behind a user's text
    assert saved["summary"]["vocab_size"] == len(word_vocab(lines))


def test_missing_text_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no text file"):
        run_recipe("mdlm-text", tmp_path, QUIET + ["text_file='nope.txt'"])


@pytest.mark.parametrize("bad", [dict(valid_fraction=0.0), dict(words=66), dict(nfes=()), dict(width=30, heads=4),
                                 dict(block_length=1), dict(split="sentences")])
def test_bad_configs(bad):
    with pytest.raises(ValueError):
        MDLMTextConfig(**bad)


def test_separator_is_a_checked_config_field():
    assert MDLMTextConfig(separator="sep_token").separator == "sep_token" and MDLMTextConfig(separator="none")
    with pytest.raises(ValueError, match="`separator` must be one of 'eos_token'"):
        MDLMTextConfig(separator="eos")
