"""The autoregressive judge: a normalised law over blocks, trained on the engine toward a known language."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from divmin.data import MarkovLanguage, all_sequences
from divmin.engine import EngineConfig
from divmin.eval import generative_perplexity
from divmin.lm import ARJudge, JudgeConfig, JudgeTrainer, tiny_gpt2, tiny_judge

QUIET = dict(progress=False, tensorboard=False, log_every=1000)


def test_the_judge_is_a_normalised_law_over_blocks():
    judge = tiny_judge(3, 4, n_layer=1, n_embd=16, seed=2)
    for length in (1, 3, 4):  # every block length up to the judge's
        seqs = all_sequences(3, length)
        assert float(judge.log_prob(seqs).exp().sum()) == pytest.approx(1.0, abs=1e-6)  # float32 logits


def test_log_prob_is_the_chain_rule_of_the_model_read_token_by_token():
    judge = tiny_judge(5, 6, n_layer=2, n_embd=16, seed=1)
    x = torch.randint(5, (3, 6), generator=torch.Generator().manual_seed(0))
    expected = torch.zeros(3, dtype=torch.float64)
    for row in range(3):
        context = [judge.bos_id]
        for token in x[row].tolist():  # one forward per prefix, no batching, no shift trick
            logits = judge.model(torch.tensor([context])).logits[0, -1, :5].double()
            expected[row] += F.log_softmax(logits, -1)[token]
            context.append(token)
    torch.testing.assert_close(judge.log_prob(x), expected, rtol=0, atol=1e-5)
    assert generative_perplexity(x, judge) == pytest.approx(math.exp(judge.nll_per_token(x)))


def test_a_full_vocabulary_model_with_its_own_bos_and_batched_scoring():
    model = tiny_gpt2(7, n_layer=1, n_embd=8, n_positions=5, seed=3)
    judge = ARJudge(model, bos_id=1, batch_size=2)
    assert (judge.vocab_size, judge.length) == (7, 5)
    x = torch.randint(7, (5, 5), generator=torch.Generator().manual_seed(1))
    whole = ARJudge(model, bos_id=1, batch_size=100).log_prob(x)
    torch.testing.assert_close(judge.log_prob(x), whole)
    judge.train()
    judge.log_prob(x)
    assert judge.training  # log_prob restores the mode


def test_trained_judge_approaches_the_exact_perplexity_of_a_markov_language():
    lang = MarkovLanguage(8, 8, order=1, sharpness=2.0, seed=0)
    held_out = lang.sample(2000, torch.Generator().manual_seed(1))
    judge = tiny_judge(8, 8, n_layer=1, n_embd=32, seed=0)
    cfg = JudgeConfig(batch_size=64, lr=3e-3, engine=EngineConfig(max_steps=300, **QUIET))
    trainer = JudgeTrainer(judge, lang.sample, config=cfg, valid=held_out)
    result = trainer.fit()
    exact = generative_perplexity(held_out, lang)  # the true language as judge
    learned = generative_perplexity(held_out, trainer.judge)
    assert abs(math.log(learned) - math.log(exact)) < 0.05  # within 5% of the exact perplexity
    assert learned > 0.98 * exact  # cross-entropy >= entropy, up to held-out noise
    assert result.metrics["eval/ppl"] == pytest.approx(learned, rel=1e-4)
    uniform = torch.randint(8, (2000, 8), generator=torch.Generator().manual_seed(2))
    assert generative_perplexity(uniform, trainer.judge) > 3 * learned  # random tokens are unlikely text
    assert generative_perplexity(uniform, lang) > 3 * exact


def test_judge_trains_on_a_tensor_of_blocks():
    lang = MarkovLanguage(4, 6, order=1, sharpness=3.0, seed=1)
    blocks = lang.sample(500, torch.Generator().manual_seed(0))
    judge = tiny_judge(4, 6, n_layer=1, n_embd=16)
    before = judge.nll_per_token(blocks)
    cfg = JudgeConfig(batch_size=32, engine=EngineConfig(max_steps=60, **QUIET))
    trainer = JudgeTrainer(judge, blocks, config=cfg)
    assert trainer.fit().optimizer_steps == {"judge": 60}
    assert trainer.judge.nll_per_token(blocks) < before - 0.2


def test_errors_name_the_argument():
    judge = tiny_judge(4, 6, n_layer=1, n_embd=8)
    with pytest.raises(TypeError, match="`judge` must be an ARJudge"):
        JudgeTrainer(tiny_gpt2(4), torch.zeros(2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="`data` holds unknown token ids"):
        JudgeTrainer(judge, torch.full((2, 6), 4))  # id 4 is the BOS, not a data token
    with pytest.raises(ValueError, match="`data` has sequences of length 7"):
        JudgeTrainer(judge, torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(TypeError, match="`data` must be a tensor"):
        JudgeTrainer(judge, [[0, 1]])
    with pytest.raises(ValueError, match="`valid` has no blocks"):
        JudgeTrainer(judge, torch.zeros(2, 6, dtype=torch.long), valid=torch.zeros(0, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="`bos_id`"):
        ARJudge(tiny_gpt2(4), bos_id=4)
    with pytest.raises(ValueError, match="`lr`"):
        JudgeConfig(lr=0.0)
    with pytest.raises(TypeError, match="`model` must be an nn.Module"):
        ARJudge("gpt2", bos_id=0)
