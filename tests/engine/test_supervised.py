"""CrossEntropyTask: the one supervised task, checked against hand-computed cross-entropies."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from divmin.engine import CrossEntropyTask, EngineConfig, Trainer
from divmin.lm import LMCollator, tiny_gpt2


def _ctx(task: CrossEntropyTask, seed: int = 5) -> types.SimpleNamespace:
    gen = torch.Generator().manual_seed(seed)
    return types.SimpleNamespace(models=task.models(), cpu_generator=gen, generator=gen, device=torch.device("cpu"))


@torch.no_grad()
def _classifier_oracle(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean of -log softmax(z)[y] in float64, row by row."""
    z = model(x).double()
    return sum(float(torch.logsumexp(z[i], 0) - z[i, y[i]]) for i in range(len(y))) / len(y)


def test_classifier_loss_is_the_mean_cross_entropy_of_the_drawn_rows():
    torch.manual_seed(0)
    model, x, y = nn.Linear(3, 4), torch.randn(10, 3), torch.randint(0, 4, (10,))
    task = CrossEntropyTask(model, (x, y), lr=0.1, batch_size=6)
    loss = task.train_step(None, _ctx(task))
    idx = torch.randint(0, 10, (6,), generator=torch.Generator().manual_seed(5))  # the rows the step drew
    assert float(loss.detach()) == pytest.approx(_classifier_oracle(model, x[idx], y[idx]), rel=1e-6)


def test_input_noise_is_drawn_after_the_rows_from_the_same_generator():
    torch.manual_seed(0)
    model, x, y = nn.Linear(3, 4), torch.randn(10, 3), torch.randint(0, 4, (10,))
    task = CrossEntropyTask(model, (x, y), lr=0.1, batch_size=6, input_noise=0.5)
    loss = task.train_step(None, _ctx(task))
    g = torch.Generator().manual_seed(5)
    idx = torch.randint(0, 10, (6,), generator=g)
    noisy = x[idx] + 0.5 * torch.randn(6, 3, generator=g)
    assert float(loss.detach()) == pytest.approx(_classifier_oracle(model, noisy, y[idx]), rel=1e-6)
    assert abs(float(loss.detach()) - _classifier_oracle(model, x[idx], y[idx])) > 1e-4  # the noise is really added


class _Bigram(nn.Module):
    """logits[b, t] = table[input_ids[b, t]]: a causal LM whose predictions are easy to compute by hand."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(vocab, vocab))

    def forward(self, input_ids, attention_mask, position_ids):
        return self.table[input_ids]


def test_lm_loss_is_the_mean_next_token_cross_entropy_over_completion_tokens():
    torch.manual_seed(0)
    rows = [{"prompt_ids": [3, 4], "completion_ids": [5, 6, 1]}, {"prompt_ids": [2], "completion_ids": [7]},
            {"prompt_ids": [4, 4, 3], "completion_ids": [1]}]
    model = _Bigram(8)
    task = CrossEntropyTask(model, rows, lr=0.1, batch_size=3, collate=LMCollator(0))
    loss = task.train_step(LMCollator(0)(rows), _ctx(task))
    # oracle from the rows alone: each completion token is predicted from the token before it
    terms = []
    for r in rows:
        seq = r["prompt_ids"] + r["completion_ids"]
        for t in range(len(r["prompt_ids"]), len(seq)):
            z = model.table[seq[t - 1]].detach().double()
            terms.append(float(torch.logsumexp(z, 0) - z[seq[t]]))
    assert len(terms) == 5
    assert float(loss.detach()) == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def test_lm_loss_equals_hugging_face_loss_on_right_padded_labels():
    rows = [{"prompt_ids": [3, 4, 5, 6], "completion_ids": [7, 8, 1]}, {"prompt_ids": [3, 4, 5, 9],
                                                                       "completion_ids": [10, 1]}]
    model = tiny_gpt2(12, seed=1, n_layer=1, n_embd=8, n_head=2, eos_id=1, pad_id=0)
    task = CrossEntropyTask(model, rows, lr=0.1, batch_size=2, collate=LMCollator(0))
    ours = task.train_step(LMCollator(0)(rows), _ctx(task))
    ids = torch.tensor([[3, 4, 5, 6, 7, 8, 1], [3, 4, 5, 9, 10, 1, 0]])
    labels = torch.tensor([[-100] * 4 + [7, 8, 1], [-100] * 4 + [10, 1, -100]])  # HF shifts them itself
    hf = model(input_ids=ids, attention_mask=(torch.arange(7) < torch.tensor([[7], [6]])).long(), labels=labels).loss
    assert float(ours.detach()) == pytest.approx(float(hf), rel=1e-6)


def test_trainer_fits_the_task_and_names_model_and_optimizer(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 2)
    y = (x[:, 0] > 0).long()
    task = CrossEntropyTask(nn.Linear(2, 2), (x, y), lr=0.1, batch_size=32, optimizer=torch.optim.Adam,
                            name="classifier")
    trainer = Trainer(task, EngineConfig(max_steps=60, log_every=10, progress=False, tensorboard=False))
    result = trainer.fit()
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    assert set(result.optimizer_steps) == {"classifier"} and set(trainer.models) == {"classifier"}
    assert isinstance(task.optimizers(task.models())["classifier"], torch.optim.Adam)


@pytest.mark.parametrize(("kwargs", "err", "match"), [
    (dict(lr=0.0), ValueError, "`lr`"),
    (dict(batch_size=0), ValueError, "`batch_size`"),
    (dict(input_noise=-1.0), ValueError, "`input_noise`"),
    (dict(collate=LMCollator(0)), TypeError, "`collate`"),
    (dict(data=[{"prompt_ids": [1], "completion_ids": [2]}]), TypeError, "`collate`"),
    (dict(data=(torch.zeros(3, 2), torch.zeros(3))), ValueError, "`data`"),
    (dict(data=(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))), ValueError, "`data`"),
    (dict(data=[], collate=LMCollator(0)), ValueError, "`data`"),
    (dict(data=[{"prompt_ids": [1], "completion_ids": [2]}], collate=LMCollator(0), input_noise=0.1), ValueError,
     "`input_noise`"),
])
def test_bad_arguments_are_refused(kwargs, err, match):
    args = dict(data=(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)), lr=0.1, batch_size=2)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        CrossEntropyTask(nn.Linear(2, 2), args.pop("data"), **args)
