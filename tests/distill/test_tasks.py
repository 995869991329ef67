"""DistillTrainer's task objects: one registry entry per task name, each with its rows, forward and metric."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from divmin.distill import DISTILL_TASKS, DistillConfig, DistillTaskKind, DistillTrainer
from divmin.lm import IGNORE
from divmin.recipes.tiny_lm import PAD_ID, build_model, build_tokenizer


def test_the_registry_holds_both_tasks_and_an_unknown_name_lists_them():
    assert set(DISTILL_TASKS) == {"causal_lm", "sequence_classification"}
    assert all(isinstance(t, DistillTaskKind) and t.name == n for n, t in DISTILL_TASKS.items())
    with pytest.raises(ValueError, match=r"`task` must be one of 'causal_lm', 'sequence_classification', got 'x'"):
        DistillConfig(task="x")


def test_the_losses_see_the_rows_whose_label_counts():
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    labels = torch.tensor([[IGNORE, 1, 2], [IGNORE, IGNORE, 4]])
    for task in DISTILL_TASKS.values():
        s_rows, t_rows, y = task.pick(s, t, labels)
        assert s_rows.shape == (3, 5) and torch.equal(t_rows, t[labels != IGNORE]) and y.tolist() == [1, 2, 4]


def test_each_task_reports_its_own_metric():
    assert DISTILL_TASKS.get("causal_lm").report(math.log(3.0), 0.25) == {"ppl": pytest.approx(3.0)}
    assert DISTILL_TASKS.get("sequence_classification").report(1.0, 0.25) == {"accuracy": 0.25}
    assert DISTILL_TASKS.get("causal_lm").samples and not DISTILL_TASKS.get("sequence_classification").samples


def test_causal_lm_rows_forward_to_token_logits():
    tok, model = build_tokenizer(), build_model(0, n_layer=1, n_embd=16)
    rows = [{"prompt": "tell me about cats :", "completion": "cats great [EOS]"}]
    tr = DistillTrainer(model, build_model(1, n_layer=1, n_embd=16), rows, tokenizer=tok)
    assert tr.pad_id == PAD_ID and tr.eos_id is None
    batch = tr.collate(tr.train_rows)
    logits = tr.task.forward(model, batch)
    assert logits.shape[:2] == batch["input_ids"].shape and set(tr.evaluate(rows)) >= {"ce", "ppl"}


class _Kw(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, features):
        return self.lin(features)


def test_classifier_rows_are_collated_and_forwarded_by_keyword():
    rows = [{"features": torch.randn(4), "labels": torch.tensor(i % 3)} for i in range(6)]
    tr = DistillTrainer(_Kw(), _Kw(), rows, config=DistillConfig(task="sequence_classification"))
    assert tr.pad_id is None and tr.eos_id is None
    batch = tr.collate(tr.train_rows)
    assert tr.task.forward(tr.model, batch).shape == (6, 3)
    assert set(tr.evaluate(rows)) == {"ce", "divergence", "teacher_agreement", "accuracy"}
    with pytest.raises(ValueError, match="`train_dataset` is empty"):
        DistillTrainer(_Kw(), _Kw(), [], config=DistillConfig(task="sequence_classification"))


@pytest.mark.parametrize("divergence,extra", [("forward_kl", {}), ("generalized_js", {"sinkd_weight": 0.1}),
                                              ("reverse_kl", {"alpha": 0.3, "temperature": 2.0}),
                                              ("generalized_js", {"alpha": 0.5, "fused": True})])
def test_compact_batch_and_counted_head_give_the_full_forwards_losses_and_gradients(divergence, extra):
    """The step's layout (compact) and head (counted rows only) change nothing: the oracle is the full
    forward on the left-padded batch with every position's logits, the labels masking the losses."""
    import torch.nn.functional as F

    from divmin.distill import sinkd_loss, token_kd_loss
    from divmin.lm import IGNORE, LMCollator, tiny_gpt2

    rows = [{"prompt_ids": [5, 6, 7, 8, 9], "completion_ids": [3]},
            {"prompt_ids": [4], "completion_ids": [2, 3, 4, 5, 6, 1]},
            {"prompt_ids": [7, 8], "completion_ids": []}, {"prompt_ids": [9, 2, 3], "completion_ids": [4, 4]}]
    student, teacher = tiny_gpt2(10, n_layer=2, n_embd=16, seed=1), tiny_gpt2(10, n_layer=2, n_embd=16, seed=0)
    cfg = DistillConfig(divergence=divergence, **extra)
    tr = DistillTrainer(student, teacher, rows, config=cfg, pad_id=0)
    batch = LMCollator(0)(rows)
    small = tr.task.compact(batch)
    assert small["input_ids"].shape[1] < batch["input_ids"].shape[1]  # the compact layout is exercised

    def step(fn):
        student.zero_grad()
        parts = fn()
        loss = sum(parts.values())
        loss.backward()
        return {k: v.detach() for k, v in parts.items()}, [p.grad.clone() for p in student.parameters()]

    def oracle():
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
        s = student(**inputs).logits
        with torch.no_grad():
            t = teacher(**inputs).logits
        y = batch["labels"]
        out = {"soft": token_kd_loss(s, t, labels=y, divergence=tr.div, temperature=cfg.temperature)}
        if cfg.alpha < 1:
            out["hard"] = F.cross_entropy(s.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
        if cfg.sinkd_weight:
            keep = y != IGNORE
            out["sinkd"] = sinkd_loss(s[keep], t[keep], epsilon=cfg.sinkd_epsilon, n_iters=cfg.sinkd_iters,
                                      temperature=cfg.sinkd_temperature)
        return out

    got, got_g = step(lambda: tr.losses(student, teacher, small))
    want, want_g = step(oracle)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)
    for a, b in zip(got_g, want_g):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
