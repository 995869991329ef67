"""The batch layout: labels aligned with the logits, positions restarting under left padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from divmin.lm import IGNORE, LMCollator, assemble, tiny_gpt2, tokenize_pairs, word_tokenizer

PAD = 0
ROWS = [{"prompt_ids": [5, 6], "completion_ids": [7, 8, 9]}, {"prompt_ids": [4, 5, 6, 7], "completion_ids": [3]},
        {"prompt_ids": [2], "completion_ids": []}]


def test_collator_aligns_labels_with_logits():
    b = LMCollator(PAD)(ROWS)
    assert b["input_ids"].shape == (3, 4 + 3) and IGNORE == -100
    for i, r in enumerate(ROWS):
        keep = b["labels"][i] != IGNORE
        assert b["labels"][i][keep].tolist() == r["completion_ids"]
        cols = keep.nonzero().flatten()
        assert torch.equal(b["input_ids"][i, cols + 1], b["labels"][i, cols])  # logits at t predict t + 1
        assert int(b["attention_mask"][i].sum()) == len(r["prompt_ids"]) + len(r["completion_ids"])
        assert b["prompt_ids"][i, 4 - len(r["prompt_ids"]):].tolist() == r["prompt_ids"]  # left-padded
        assert int(b["prompt_mask"][i].sum()) == len(r["prompt_ids"])
    assert b["position_ids"][1].tolist() == [0, 1, 2, 3, 4, 4, 4]
    assert b["position_ids"][0, 2] == 0 and b["position_ids"][2, 3] == 0  # positions restart at the first real token


def test_cross_entropy_on_the_labels_is_the_hand_computed_completion_loss():
    b = LMCollator(PAD)(ROWS)
    logits = torch.randn(*b["input_ids"].shape, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = F.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(), ignore_index=-100)
    # by hand from the raw rows: completion token j of row i sits at column Lp + j and is
    # predicted by the logits one column earlier
    lp, terms = 4, []
    for i, r in enumerate(ROWS):
        for j, tok in enumerate(r["completion_ids"]):
            terms.append(-torch.log_softmax(logits[i, lp + j - 1], -1)[tok])
    torch.testing.assert_close(got, torch.stack(terms).mean())


def test_positions_make_a_left_padded_row_compute_what_it_computes_alone():
    model = tiny_gpt2(10, seed=0, n_layer=1, n_embd=16, n_head=2).eval()
    b = LMCollator(PAD)(ROWS)
    with torch.no_grad():
        batched = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                        position_ids=b["position_ids"]).logits
        for i, r in enumerate(ROWS):
            ids = r["prompt_ids"] + r["completion_ids"]
            alone = model(input_ids=torch.tensor([ids])).logits[0]
            cols = b["attention_mask"][i].bool()
            torch.testing.assert_close(batched[i, cols], alone, rtol=1e-5, atol=1e-5)


def test_assemble_ignores_completion_tokens_outside_the_mask():
    b = assemble(torch.tensor([[3]]), torch.tensor([[1]]), torch.tensor([[4, 1, 0]]), torch.tensor([[1, 1, 0]]))
    assert b["labels"].tolist() == [[4, 1, IGNORE, IGNORE]] and b["attention_mask"].tolist() == [[1, 1, 1, 0]]


def test_tokenize_pairs_reads_ids_or_text():
    tok = word_tokenizer(["[PAD]", "[EOS]", "[UNK]", "tell", "me", "cats", "purr"])
    got = tokenize_pairs([{"prompt": "tell me", "completion": "cats purr [EOS]"},
                          {"prompt_ids": (3,), "completion_ids": []}], tok, "train")
    assert got == [{"prompt_ids": [3, 4], "completion_ids": [5, 6, 1]}, {"prompt_ids": [3], "completion_ids": []}]


@pytest.mark.parametrize("rows, tokenizer, error, match", [
    ([["tell me", "cats"]], None, TypeError, r"`train`\[0\]"),
    ([{"prompt": "a"}], None, ValueError, "prompt_ids/completion_ids or prompt/completion"),
    ([{"prompt": "a", "completion": "b"}], None, ValueError, "tokenizer"),
    ([{"prompt_ids": [], "completion_ids": [1]}], None, ValueError, "empty prompt"),
    ([], None, ValueError, "`train` is empty"),
])
def test_tokenize_pairs_rejects_bad_rows(rows, tokenizer, error, match):
    with pytest.raises(error, match=match):
        tokenize_pairs(rows, tokenizer, "train")


def test_assemble_and_collator_reject_bad_arguments():
    ids, mask = torch.tensor([[3, 4]]), torch.tensor([[1, 1]])
    with pytest.raises(ValueError, match="prompt_mask"):
        assemble(ids, torch.tensor([[1]]), ids, mask)
    with pytest.raises(TypeError, match="completion_ids"):
        assemble(ids, mask, ids.float(), mask)
    with pytest.raises(ValueError, match="completion_ids"):
        assemble(ids, mask, ids.repeat(2, 1), mask.repeat(2, 1))
    with pytest.raises(ValueError, match="pad_id"):
        LMCollator(-1)
    with pytest.raises(ValueError, match="rows"):
        LMCollator(PAD)([])


@pytest.mark.parametrize("bad", [1.5, True, -1, torch.tensor(2.0), "7"])
def test_token_ids_must_be_ints_at_least_zero_on_the_fast_path_and_off_it(bad):
    """Plain-int rows take a fast check; a row with one odd id must be refused all the same."""
    np = pytest.importorskip("numpy")
    good = [{"prompt_ids": [np.int64(3), torch.tensor(4)], "completion_ids": [5, 0]}]
    assert tokenize_pairs(good, None) == [{"prompt_ids": [3, 4], "completion_ids": [5, 0]}]
    assert all(type(t) is int for t in tokenize_pairs(good, None)[0]["prompt_ids"])
    with pytest.raises(ValueError, match="not an int >= 0"):
        tokenize_pairs([{"prompt_ids": [3, 4], "completion_ids": [5, bad]}], None)
    with pytest.raises(ValueError, match="not an int >= 0"):
        LMCollator(PAD)([{"prompt_ids": [bad], "completion_ids": []}])


def test_collator_with_no_completion_tokens_gives_no_labels():
    b = LMCollator(PAD)([{"prompt_ids": [3, 4], "completion_ids": []}, {"prompt_ids": [5], "completion_ids": []}])
    assert b["input_ids"].tolist() == [[3, 4], [PAD, 5]] and b["attention_mask"].tolist() == [[1, 1], [0, 1]]
    assert bool((b["labels"] == IGNORE).all())
