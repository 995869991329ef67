"""sequence_logps against a float64 log_softmax oracle; completion_logps normalised and padding-invariant."""

from __future__ import annotations

import itertools

import pytest
import torch

from divmin.lm import Completions, completion_logps, sequence_logps, tiny_gpt2

IGNORE = -100


def _brute_force(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row, sum over labelled positions of log_softmax(logits[b, t])[labels[b, t]], all in float64."""
    out = torch.zeros(labels.shape[0], dtype=torch.float64)
    for b, t in itertools.product(range(labels.shape[0]), range(labels.shape[1])):
        if labels[b, t] != IGNORE:
            out[b] += torch.log_softmax(logits[b, t].double(), -1)[labels[b, t]]
    return out


def _case(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (4 * torch.randn(3, 7, 11, generator=g)).to(dtype).requires_grad_()
    labels = torch.randint(0, 11, (3, 7), generator=g)
    keep = torch.tensor([[0, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    return logits, torch.where(keep, labels, IGNORE)


@pytest.mark.parametrize("dtype, out_dtype, tol", [(torch.float64, torch.float64, 1e-12),
                                                   (torch.float32, torch.float32, 1e-5),
                                                   (torch.bfloat16, torch.float32, 1e-5),
                                                   (torch.float16, torch.float32, 1e-5)])
def test_equals_a_float64_log_softmax_gather_sum(dtype, out_dtype, tol):
    logits, labels = _case(dtype)
    got = sequence_logps(logits, labels)
    assert got.dtype == out_dtype and got.shape == (3,)
    # the oracle sees the same (rounded) logits, upcast to float64 before anything else
    torch.testing.assert_close(got.double(), _brute_force(logits.detach(), labels), rtol=tol, atol=tol)


def test_gradient_reaches_only_labelled_positions_and_matches_autograd_of_the_oracle():
    logits, labels = _case(torch.float64, seed=1)
    (grad,) = torch.autograd.grad(sequence_logps(logits, labels).sum(), logits)
    (expected,) = torch.autograd.grad(_brute_force(logits, labels).sum(), logits)
    torch.testing.assert_close(grad, expected)
    assert bool((grad[labels == IGNORE] == 0).all())


def test_ignore_index_is_honoured():
    logits, labels = _case(torch.float32, seed=2)
    other = torch.where(labels == IGNORE, -1, labels)
    torch.testing.assert_close(sequence_logps(logits, other, ignore_index=-1), sequence_logps(logits, labels))


@pytest.mark.parametrize("logits, labels, error, match", [
    (torch.zeros(2, 5, 4), torch.zeros(2, 4, dtype=torch.long), ValueError, "labels"),
    (torch.zeros(2, 5, 4), torch.zeros(2, 5), TypeError, "labels"),
    (torch.zeros(2, 5, 4), torch.full((2, 5), 4), ValueError, "labels"),
    (torch.zeros(2, 5, 4), torch.full((2, 5), -3), ValueError, "labels"),
    (torch.zeros(10, 4), torch.zeros(10, dtype=torch.long), ValueError, "logits"),
    (torch.zeros(2, 5, 4, dtype=torch.long), torch.zeros(2, 5, dtype=torch.long), TypeError, "logits"),
])
def test_bad_arguments_name_the_argument(logits, labels, error, match):
    with pytest.raises(error, match=match):
        sequence_logps(logits, labels)


# ------------------------------------------------------------ completion_logps
def _model(vocab=7, seed=0):
    return tiny_gpt2(vocab, seed=seed, n_layer=1, n_embd=16, n_head=2, n_positions=16).eval()


def _all_completions(vocab, eos=1, pad=0):
    """Every completion of at most 2 tokens that stops at EOS, with the sampler's mask convention."""
    rows = [[eos, pad]] + [[a, b] for a, b in itertools.product(range(vocab), repeat=2) if a != eos]
    tokens = torch.tensor(rows)
    seen = torch.cumsum((tokens == eos).int(), 1)
    return Completions(tokens, (seen == 0) | ((seen == 1) & (tokens == eos)))


@pytest.mark.parametrize("prompt, prompt_mask", [(torch.tensor([3, 4]), None),
                                                 (torch.tensor([[0, 0, 3]]), torch.tensor([[0, 0, 1]]))])
def test_probabilities_of_every_completion_sum_to_one(prompt, prompt_mask):
    model, comp = _model(), _all_completions(7)
    if prompt.dim() == 2:  # one left-padded prompt, repeated for every completion
        prompt, prompt_mask = prompt.expand(len(comp.tokens), -1), prompt_mask.expand(len(comp.tokens), -1)
    with torch.no_grad():
        logp = completion_logps(model, prompt, comp, prompt_mask=prompt_mask)
    assert float(torch.logsumexp(logp.double(), 0).exp()) == pytest.approx(1.0, abs=1e-5)


def test_padded_batch_equals_each_row_alone_and_one_prompt_broadcasts():
    model = _model(seed=1)
    prompts, pmask = torch.tensor([[0, 0, 3], [5, 6, 3]]), torch.tensor([[0, 0, 1], [1, 1, 1]])
    comp = Completions(torch.tensor([[4, 2, 1], [2, 1, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]]).bool())
    with torch.no_grad():
        got = completion_logps(model, prompts, comp, prompt_mask=pmask)
        for i in range(2):  # oracle: the unpadded row alone, a plain float64 log-softmax
            ids = torch.cat([prompts[i][pmask[i].bool()], comp.tokens[i][comp.mask[i]]])
            logp = torch.log_softmax(model(input_ids=ids[None]).logits[0].double(), -1)
            lp = int(pmask[i].sum())
            expected = sum(float(logp[lp - 1 + j, ids[lp + j]]) for j in range(len(ids) - lp))
            assert float(got[i]) == pytest.approx(expected, abs=1e-5)
        shared = completion_logps(model, torch.tensor([5, 6, 3]), comp)
        torch.testing.assert_close(shared, completion_logps(model, prompts[1:].expand(2, -1), comp))
    assert float(shared[1]) == pytest.approx(float(got[1]), abs=1e-6)


def test_completion_logps_is_differentiable_and_checks_its_arguments():
    model = _model()
    comp = Completions(torch.tensor([[4, 1]]), torch.tensor([[True, True]]))
    completion_logps(model, torch.tensor([3]), comp).sum().backward()
    assert model.transformer.wte.weight.grad is not None
    with pytest.raises(TypeError, match="completions"):
        completion_logps(model, torch.tensor([3]), torch.tensor([[4, 1]]))
    with pytest.raises(ValueError, match="prompt_ids"):
        completion_logps(model, torch.zeros(1, 1, 1).long(), comp)
