"""The compact layout and the head on counted rows: the same logits and gradients as the full forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from divmin.lm import IGNORE, LMCollator, compact, counted_logits, tiny_gpt2
from divmin.lm._heads import _split

ROWS = [{"prompt_ids": [5, 6, 7, 8, 9], "completion_ids": [3]},
        {"prompt_ids": [4], "completion_ids": [2, 3, 4, 5, 6, 1]},
        {"prompt_ids": [7, 8], "completion_ids": []},
        {"prompt_ids": [9, 2, 3], "completion_ids": [4, 4]}]


def _full(model, batch):
    """The oracle: the model's own full forward on the uncompacted batch, picked at the counted rows."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"]).logits
    return out[batch["labels"] != IGNORE]


def test_compact_rolls_rows_to_column_zero_and_cuts_the_padding_columns():
    batch = LMCollator(0)(ROWS)
    small = compact(batch)
    assert batch["input_ids"].shape[1] == 5 + 6 and small["input_ids"].shape[1] == 7  # the longest row
    keep, keep2 = batch["labels"] != IGNORE, small["labels"] != IGNORE
    assert torch.equal(batch["labels"][keep], small["labels"][keep2])  # same labels, same order
    for i, r in enumerate(ROWS):
        n = len(r["prompt_ids"]) + len(r["completion_ids"])
        assert small["input_ids"][i, :n].tolist() == r["prompt_ids"] + r["completion_ids"]
        assert small["attention_mask"][i].tolist() == [1] * n + [0] * (7 - n)
        assert small["position_ids"][i, :n].tolist() == list(range(n))
    assert small["prompt_ids"] is batch["prompt_ids"]  # other entries kept
    again = compact(small)
    assert again is small  # nothing left to cut


def test_compact_keeps_a_causal_lms_counted_logits():
    batch = LMCollator(0)(ROWS)
    model = tiny_gpt2(10, n_layer=2, n_embd=16, seed=0)
    with torch.no_grad():
        torch.testing.assert_close(_full(model, compact(batch)), _full(model, batch), rtol=1e-5, atol=1e-6)


def test_counted_logits_equal_the_full_forward_with_the_same_gradients():
    batch = compact(LMCollator(0)(ROWS))
    model = tiny_gpt2(10, n_layer=2, n_embd=16, seed=0)
    assert _split(model) is not None  # the head-on-counted-rows path is the one under test
    w = torch.randn(int((batch["labels"] != IGNORE).sum()), 10, generator=torch.Generator().manual_seed(1))
    grads = []
    for fn in (counted_logits, _full):
        model.zero_grad()
        out = fn(model, batch)
        (out * w).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        if fn is counted_logits:
            got = out.detach()
        else:
            torch.testing.assert_close(got, out.detach(), rtol=1e-5, atol=1e-6)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class _Plain(nn.Module):
    """A causal LM without a body/head split: returns its logits tensor directly."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 10)

    def forward(self, input_ids, attention_mask, position_ids):
        return self.emb(input_ids) + position_ids[..., None].float()


def test_models_without_a_plain_head_take_the_full_forward():
    batch = LMCollator(0)(ROWS)
    plain = _Plain()
    assert _split(plain) is None
    torch.testing.assert_close(counted_logits(plain, batch), _full(lambda **k: type("o", (), {"logits": plain(**k)}),
                                                                   batch))
    capped = tiny_gpt2(10, n_layer=1, n_embd=8)
    capped.config.final_logit_softcapping = 30.0  # a forward that transforms the head's output: no split
    assert _split(capped) is None


@pytest.mark.parametrize("labels", [None, "float", "short"])
def test_counted_logits_refuses_labels_that_are_not_integer_and_aligned(labels):
    batch = LMCollator(0)(ROWS)
    batch["labels"] = {None: None, "float": batch["labels"].float(), "short": batch["labels"][:, :-1]}[labels]
    with pytest.raises(TypeError, match="`batch` must hold integer `labels`"):
        counted_logits(tiny_gpt2(10, n_layer=1, n_embd=8), batch)
