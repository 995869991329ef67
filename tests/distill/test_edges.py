"""Validation the KD layer must not miss."""

from __future__ import annotations

import pytest
import torch

from divmin.distill import DistillConfig, TopKTeacher, token_kd_loss


def test_topk_teacher_with_a_repeated_id_is_refused():
    teacher = TopKTeacher(torch.log(torch.tensor([[0.5, 0.2], [0.5, 0.2]])), torch.tensor([[1, 1], [0, 2]]))
    with pytest.raises(ValueError, match="`teacher_logits.indices` repeat an id within 1 row"):
        token_kd_loss(torch.zeros(2, 5), teacher)


def test_distinct_ids_are_accepted():
    teacher = TopKTeacher(torch.log(torch.tensor([[0.5, 0.2], [0.5, 0.2]])), torch.tensor([[1, 3], [0, 2]]))
    assert torch.isfinite(token_kd_loss(torch.zeros(2, 5), teacher))


@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_sinkd_temperature_is_validated(value):
    with pytest.raises(ValueError, match="`sinkd_temperature`"):
        DistillConfig(sinkd_temperature=value)
