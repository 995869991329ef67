"""The ancestral sampler: exact laws (chi-square), KV cache vs recompute, left padding, generators, EOS."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from scipy.stats import chisquare

from divmin.lm import Completions, completion_logps, sample_completions, sample_n, tiny_gpt2

from ._models import PositionalBigram, two_token_law

EOS, PAD = 1, 0


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _sharp_gpt2(seed=0, vocab=12, scale=15.0):
    """A tiny GPT-2 with peaked next-token laws (ln_f scaled), so a wrong input changes the samples."""
    model = tiny_gpt2(vocab, seed=seed, n_layer=2, n_embd=16, n_head=2, n_positions=32)
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(scale)
    return model.eval()


def _chi2_pvalue(samples: Completions, law: dict) -> float:
    """Pearson's test of (y1, y2) counts against ``law``; outcomes expected < 5 times share one bin."""
    counts = Counter((int(t[0]), int(t[1]) if m[1] else None) for t, m in zip(samples.tokens, samples.mask))
    assert set(counts) <= set(law), set(counts) - set(law)
    n = len(samples.tokens)
    big = [k for k in law if law[k] * n >= 5]
    observed = [counts.get(k, 0) for k in big]
    expected = [law[k] * n for k in big]
    if len(big) < len(law):
        observed.append(n - sum(observed))
        expected.append(n - sum(expected))
    return float(chisquare(observed, expected).pvalue)


# --------------------------------------------------------------- exact laws
@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_two_token_frequencies_match_the_exact_law_on_left_padded_rows(cache, temperature):
    model = PositionalBigram(cache=cache)
    n = 6000
    # rows 0..n-1: prompt [3] left-padded to 3 columns (its token sits at position 0);
    # rows n..2n-1: prompt [2, 4, 3] (the same last token, at position 2)
    prompts = torch.tensor([[PAD, PAD, 3]] * n + [[2, 4, 3]] * n)
    mask = torch.tensor([[0, 0, 1]] * n + [[1, 1, 1]] * n)
    out = sample_completions(model, prompts, mask, max_new_tokens=2, eos_id=EOS, pad_id=PAD, generator=_gen(1),
                             temperature=temperature)
    short, long = Completions(out.tokens[:n], out.mask[:n]), Completions(out.tokens[n:], out.mask[n:])
    assert _chi2_pvalue(short, two_token_law(model, 3, 0, EOS, temperature)) > 1e-3
    assert _chi2_pvalue(long, two_token_law(model, 3, 2, EOS, temperature)) > 1e-3
    # the test has power: the short rows are far from the law of the token at the padded column's position
    assert _chi2_pvalue(short, two_token_law(model, 3, 2, EOS, temperature)) < 1e-6


def test_gpt2_next_token_frequencies_match_its_softmax():
    model = _sharp_gpt2(seed=1)
    n = 6000
    prompts, mask = torch.tensor([[0, 0, 5, 6]] * n), torch.tensor([[0, 0, 1, 1]] * n)
    out = sample_completions(model, prompts, mask, max_new_tokens=1, eos_id=EOS, pad_id=PAD, generator=_gen(2))
    with torch.no_grad():  # the oracle: the unpadded prompt alone, default positions
        law = torch.softmax(model(input_ids=torch.tensor([[5, 6]])).logits[0, -1].double(), -1)
        shifted = torch.softmax(model(input_ids=torch.tensor([[5, 6]]), position_ids=torch.tensor([[2, 3]]))
                                .logits[0, -1].double(), -1)
    observed = torch.bincount(out.tokens[:, 0], minlength=12).double().numpy()
    assert float(law.max()) > 0.3 and float(law.min()) * n > 5  # peaked, and every bin is expected > 5 times
    assert float(chisquare(observed, (law * n).numpy()).pvalue) > 1e-3
    assert float(chisquare(observed, (shifted * n).numpy()).pvalue) < 1e-6  # wrong positions would be caught


# --------------------------------------------------- equivalent computations
def _no_cache(model):
    class NoCache(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, input_ids, attention_mask=None, position_ids=None, **_):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits

    return NoCache()


def test_kv_cache_and_full_recompute_sample_the_same_tokens():
    model = _sharp_gpt2()
    prompts = torch.tensor([[0, 0, 4, 5], [3, 4, 5, 6], [0, 7, 8, 2]])
    mask = (torch.arange(4) >= torch.tensor([[2], [0], [1]])).long()
    kw = dict(max_new_tokens=8, eos_id=EOS, pad_id=PAD)
    a = sample_completions(model, prompts.repeat(8, 1), mask.repeat(8, 1), generator=_gen(3), **kw)
    b = sample_completions(_no_cache(model), prompts.repeat(8, 1), mask.repeat(8, 1), generator=_gen(3), **kw)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)
    assert a.tokens.shape[1] > 2 and len(set(map(tuple, a.tokens.tolist()))) > 3  # long, varied samples


def test_extra_left_padding_does_not_change_the_samples():
    model = _sharp_gpt2(seed=2)
    prompts = torch.tensor([[0, 4, 5], [3, 4, 5]]).repeat(8, 1)
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]]).repeat(8, 1)
    kw = dict(max_new_tokens=6, eos_id=EOS, pad_id=PAD)
    a = sample_completions(model, prompts, mask, generator=_gen(4), **kw)
    wide = torch.cat([torch.full((16, 3), PAD), prompts], 1), torch.cat([torch.zeros(16, 3).long(), mask], 1)
    b = sample_completions(model, *wide, generator=_gen(4), **kw)
    assert torch.equal(a.tokens, b.tokens) and a.tokens.shape[1] > 2


def test_left_padded_batch_log_probs_equal_per_row_unpadded_ones():
    """Samples of a padded batch, scored in the batch and row by row without padding (plain float64 oracle)."""
    model = _sharp_gpt2(seed=3, scale=3.0)
    prompts, mask = torch.tensor([[0, 0, 4], [0, 5, 6], [7, 8, 9]]), torch.tensor([[0, 0, 1], [0, 1, 1], [1, 1, 1]])
    out = sample_completions(model, prompts, mask, max_new_tokens=6, eos_id=EOS, pad_id=PAD, generator=_gen(5))
    with torch.no_grad():
        batched = completion_logps(model, prompts, out, prompt_mask=mask)
        for i in range(3):
            prompt, comp = prompts[i][mask[i].bool()], out.tokens[i][out.mask[i]]
            logp = torch.log_softmax(model(input_ids=torch.cat([prompt, comp])[None]).logits[0].double(), -1)
            expected = sum(float(logp[len(prompt) - 1 + j, c]) for j, c in enumerate(comp.tolist()))
            assert float(batched[i]) == pytest.approx(expected, abs=1e-4)


def test_sample_n_is_sample_completions_on_copies_of_the_prompt():
    model, prompt = _sharp_gpt2(seed=4), torch.tensor([4, 5])
    a = sample_n(model, prompt, 6, max_new_tokens=5, eos_id=EOS, pad_id=PAD, generator=_gen(6))
    b = sample_completions(model, prompt.repeat(6, 1), max_new_tokens=5, eos_id=EOS, pad_id=PAD, generator=_gen(6))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)


# ----------------------------------------------------------------- generator
def test_same_generator_state_gives_the_same_samples_and_the_global_rng_is_untouched():
    model, prompts = _sharp_gpt2(), torch.tensor([[4, 5]] * 16)
    kw = dict(max_new_tokens=6, eos_id=EOS, pad_id=PAD)
    gen = _gen(7)
    state, global_state = gen.get_state(), torch.get_rng_state()
    a = sample_completions(model, prompts, generator=gen, **kw)
    gen.set_state(state)  # what an exact resume does
    b = sample_completions(model, prompts, generator=gen, **kw)
    c = sample_completions(model, prompts, generator=gen, **kw)  # the stream moved on
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens[:, :a.tokens.shape[1]])
    assert torch.equal(torch.get_rng_state(), global_state)


# ---------------------------------------------------------------- EOS, modes
def test_rows_stop_at_their_first_eos():
    model = PositionalBigram(vocab=4, scale=1.0, seed=3)
    out = sample_completions(model, torch.tensor([[2]] * 400), max_new_tokens=6, eos_id=EOS, pad_id=PAD,
                             generator=_gen(8))
    seen = torch.cumsum((out.tokens == EOS).int(), 1)
    first = (seen == 1) & (out.tokens == EOS)
    assert torch.equal(out.mask, (seen == 0) | first)  # through the first EOS, included
    assert bool((out.tokens[seen - first.int() > 0] == PAD).all())  # pads after it
    assert bool(first.any(1).any()) and not bool(first.any(1).all())  # some rows stopped, some ran to the cap
    assert out.tokens.shape[1] == 6 and bool(out.mask[~first.any(1)].all())


def test_sampling_stops_early_once_every_row_is_done_and_restores_the_mode():
    model = PositionalBigram(vocab=4, seed=0)
    with torch.no_grad():
        model.table[:, :, EOS] += 30.0  # EOS next, almost surely
    model.train()
    out = sample_completions(model, torch.tensor([[2], [3]]), max_new_tokens=9, eos_id=EOS, pad_id=PAD,
                             generator=_gen(9))
    assert out.tokens.tolist() == [[EOS], [EOS]] and out.mask.all()
    assert model.modes == [False] and model.training  # eval while sampling, train mode restored


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(max_new_tokens=0), ValueError, "max_new_tokens"),
    (dict(eos_id=-1), ValueError, "eos_id"),
    (dict(pad_id=1.0), ValueError, "pad_id"),
    (dict(generator=None), TypeError, "generator"),
    (dict(temperature=0.0), ValueError, "temperature"),
    (dict(prompt_ids=torch.tensor([3, 4])), ValueError, "prompt_ids"),
    (dict(prompt_ids=torch.zeros(2, 0).long()), ValueError, "prompt_ids"),
    (dict(prompt_mask=torch.tensor([[1, 0], [1, 1]])), ValueError, "prompt_mask"),
    (dict(prompt_mask=torch.tensor([[1, 1]])), ValueError, "prompt_mask"),
    (dict(model=lambda **kw: None), TypeError, "model"),
])
def test_bad_arguments_name_the_argument(kwargs, error, match):
    args = dict(model=PositionalBigram(), prompt_ids=torch.tensor([[2, 3], [3, 4]]), prompt_mask=None,
                max_new_tokens=2, eos_id=EOS, pad_id=PAD, generator=_gen(), temperature=1.0)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        sample_completions(args.pop("model"), args.pop("prompt_ids"), args.pop("prompt_mask"), **args)


@pytest.mark.parametrize("prompt, n, match", [(torch.tensor([[2, 3]]), 2, "prompt"), (torch.tensor([2]), 0, "`n`")])
def test_sample_n_rejects_bad_arguments(prompt, n, match):
    with pytest.raises(ValueError, match=match):
        sample_n(PositionalBigram(), prompt, n, max_new_tokens=2, eos_id=EOS, pad_id=PAD, generator=_gen())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_model_samples_from_a_cpu_or_cuda_generator_reproducibly():
    model, prompts = _sharp_gpt2().cuda(), torch.tensor([[4, 5]] * 32)
    kw = dict(max_new_tokens=6, eos_id=EOS, pad_id=PAD)
    for make in (lambda: _gen(10), lambda: torch.Generator(device="cuda").manual_seed(10)):
        a, b = (sample_completions(model, prompts, generator=make(), **kw) for _ in range(2))
        assert a.tokens.is_cuda and torch.equal(a.tokens, b.tokens)
    cpu = sample_completions(model.cpu(), prompts, generator=_gen(10), **kw)
    gpu = sample_completions(model.cuda(), prompts, generator=_gen(10), **kw)  # drawn on the CPU generator
    assert torch.equal(cpu.tokens, gpu.tokens.cpu())
