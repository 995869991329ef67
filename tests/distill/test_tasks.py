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
    assert DISTILL_TASKS["causal_lm"].report(math.log(3.0), 0.25) == {"ppl": pytest.approx(3.0)}
    assert DISTILL_TASKS["sequence_classification"].report(1.0, 0.25) == {"accuracy": 0.25}
    assert DISTILL_TASKS["causal_lm"].samples and not DISTILL_TASKS["sequence_classification"].samples


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
