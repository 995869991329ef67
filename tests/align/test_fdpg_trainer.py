"""FDPGTrainer on a tiny GPT-2: exact completion probabilities, sampling, training, resume."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from divmin.align import EnergyTarget, FDPGConfig, FDPGTrainer, PointwiseConstraint
from divmin.align._sampling import Completions, completion_logps, sample_completions
from divmin.engine import EngineConfig
from tests.align import _tiny

EOS, PAD = _tiny.VOCAB["[EOS]"], _tiny.VOCAB["[PAD]"]


def _model(seed=0):
    return _tiny.model(seed).eval()


def test_completion_probabilities_sum_to_one_over_every_completion():
    """Every completion of at most 2 tokens (stopping at EOS): their probabilities sum to 1."""
    model, prompt = _model(), torch.tensor([EOS])
    v = len(_tiny.VOCAB)
    rows = [[EOS, PAD]] + [[a, b] for a, b in itertools.product(range(v), range(v)) if a != EOS]
    tokens = torch.tensor(rows)
    first = torch.cumsum((tokens == EOS).int(), 1)
    mask = (first == 0) | ((first == 1) & (tokens == EOS))
    with torch.no_grad():
        logp = completion_logps(model, prompt, Completions(tokens, mask))
    assert float(torch.logsumexp(logp.double(), 0).exp()) == pytest.approx(1.0, abs=1e-5)


def test_sample_frequencies_match_completion_probabilities():
    model, prompt = _model(1), torch.tensor([EOS, _tiny.VOCAB["cats"]])
    comp = sample_completions(model, prompt, 4000, 1, eos_id=EOS, pad_id=PAD,
                              generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(comp.tokens[:, 0], minlength=len(_tiny.VOCAB)).float() / 4000
    all_tokens = torch.arange(len(_tiny.VOCAB))[:, None]
    with torch.no_grad():
        p = completion_logps(model, prompt, Completions(all_tokens, torch.ones_like(all_tokens, dtype=torch.bool)))
    assert torch.allclose(freq, p.exp(), atol=0.03)


class _NoCache(torch.nn.Module):
    """The same model without KV cache: sampling must fall back to full forwards."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, **_):
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask)
        return type("Out", (), {"logits": out.logits})()


def test_kv_cache_and_full_forward_sampling_agree():
    model, prompt = _model(2), torch.tensor([EOS])
    a = sample_completions(model, prompt, 16, 6, eos_id=EOS, pad_id=PAD, generator=torch.Generator().manual_seed(3))
    b = sample_completions(_NoCache(model), prompt, 16, 6, eos_id=EOS, pad_id=PAD,
                           generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)
    after_eos = torch.cumsum((a.tokens == EOS).int(), 1) > (a.tokens == EOS).int()
    assert bool((a.tokens[after_eos] == PAD).all()) and not bool(a.mask[after_eos].any())


def _target():
    return EnergyTarget() * PointwiseConstraint(lambda texts: ["good" in t.split() for t in texts], epsilon=0.01)


def _trainer(tmp_path, steps, mode="online", divergence="js", **kw):
    engine = EngineConfig(max_steps=steps, log_every=1, out_dir=str(tmp_path), progress=False, tensorboard=False,
                          checkpoint_every=kw.pop("checkpoint_every", None), seed=0)
    offline = {"proposal_update_every": 2} if mode == "offline" else {}  # refused online
    cfg = FDPGConfig(divergence=divergence, lr=1e-2, contexts_per_step=2, samples_per_context=16,
                     max_new_tokens=5, mode=mode, engine=engine, **offline, **kw)
    return FDPGTrainer(_model(3).train(), _tiny.tokenizer(), _target(),
                       contexts=["question about cats", "question about dogs"], config=cfg)


def _metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("divergence", ["js", "forward_kl"])
def test_online_training_raises_alignment(tmp_path, divergence):
    trainer = _trainer(tmp_path, 20, divergence=divergence)
    trainer.train()
    rows = [r for r in _metrics(tmp_path) if "alignment" in r]
    first = sum(r["alignment"] for r in rows[:5]) / 5
    last = sum(r["alignment"] for r in rows[-5:]) / 5
    assert last > first + 0.2, (first, last)
    assert all(k in rows[-1] for k in ("kl_target_policy", "kl_policy_target", "tv", "js", "ess", "entropy"))


def test_offline_mode_trains_and_replaces_the_proposal(tmp_path):
    trainer = _trainer(tmp_path, 20, mode="offline", divergence="forward_kl")
    trainer.train()
    rows = [r for r in _metrics(tmp_path) if "alignment" in r]
    assert trainer.proposal_updates >= 1
    assert rows[-1]["alignment"] > rows[0]["alignment"]
    assert any(r["ess"] < 0.999 for r in rows)  # samples really came from a different distribution


def test_resume_replays_the_uninterrupted_run(tmp_path):
    full = _trainer(tmp_path / "full", 6)
    full.train()
    part = _trainer(tmp_path / "part", 3, checkpoint_every=3)
    part.train()
    resumed = _trainer(tmp_path / "part", 6, checkpoint_every=3)
    resumed.train(resume=True)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    assert resumed.log_z("question about cats") == pytest.approx(full.log_z("question about cats"))


@pytest.mark.parametrize("kwargs, match", [(dict(mode="sideways"), "mode"), (dict(samples_per_context=1), "samples"),
                                           (dict(divergence="nope"), "valid names"), (dict(lr=0.0), "lr"),
                                           (dict(baseline_decay=1.0), "baseline_decay")])
def test_bad_config_names_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FDPGConfig(**kwargs)


def test_bad_trainer_arguments():
    with pytest.raises(TypeError, match="target"):
        FDPGTrainer(_model(), _tiny.tokenizer(), lambda x: x)
    with pytest.raises(ValueError, match="contexts"):
        FDPGTrainer(_model(), _tiny.tokenizer(), _target(), contexts="one string")
