"""SpeechToEGGTrainer on the engine: the two phases, frozen prior, optimizer counts, config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from divmin.engine import EngineConfig
from divmin.speech import SpeechToEGGTrainer, SpeechToEGGConfig, frame_signal, normalize_speech, overlap_add, synthesize
from divmin.speech import egg_loss

from .._resume import assert_resumes_exactly


def _engine(steps: int) -> EngineConfig:
    return EngineConfig(max_steps=steps, log_every=5, progress=False, tensorboard=False, cpu=True, seed=1)


@pytest.fixture(scope="module")
def pair():
    u = synthesize(0.15, sample_rate=8000.0, voice="modal", seed=0)
    return u.speech, u.egg


def _config(**kw) -> SpeechToEGGConfig:
    base = dict(frame_len=32, hop=8, latent_dim=4, hidden=8, layers=3, decoder_layers=2, batch_size=8, ae_steps=10,
                critic_codes=64, engine=_engine(20))
    return SpeechToEGGConfig(**{**base, **kw})


def test_phases_optimizer_counts_and_frozen_prior(pair):
    m = SpeechToEGGTrainer(*pair, config=_config(critic_steps=2, adv_weight=0.5))
    result = m.fit()
    assert result.optimizer_steps == {"autoencoder": 10, "speech_encoder": 10, "critic": 20}
    first = [h for h in result.history if "ae_recon" in h]
    assert first and all(np.isfinite(h["ae_recon"]) for h in first)
    second = [h for h in result.history if "recon" in h]
    assert second and all(np.isfinite(h["latent_divergence"]) for h in second)
    # phase 2 leaves the prior alone: rerun phase 1 only and compare the autoencoder's weights
    m1 = SpeechToEGGTrainer(*pair, config=_config(critic_steps=2, adv_weight=0.5, engine=_engine(11)))
    m1.fit()
    for a, b in zip(m.decoder.state_dict().values(), m1.decoder.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(m.egg_encoder.state_dict().values(), m1.egg_encoder.state_dict().values()):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(m.speech_encoder.state_dict().values(),
                                                    m1.speech_encoder.state_dict().values()))


def test_adversarial_weight_ramps_up_over_the_warmup(pair):
    engine = EngineConfig(max_steps=16, log_every=1, progress=False, tensorboard=False, cpu=True, seed=1)
    history = SpeechToEGGTrainer(*pair, config=_config(adv_weight=0.4, adv_warmup=4, engine=engine)).fit().history
    weights = [h["adv_weight"] for h in history if "adv_weight" in h]
    assert weights == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])  # phase-2 steps 1..6 (engine steps 11..16)


def test_no_adversary_baseline_never_trains_the_critic(pair):
    m = SpeechToEGGTrainer(*pair, config=_config(adv_weight=0.0))
    before = [p.clone() for p in m.critic.parameters()]
    result = m.fit()
    assert result.optimizer_steps["critic"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, m.critic.parameters()))
    assert all("latent_divergence" not in h for h in result.history)


def test_predict_shape_and_framing_round_trip(pair):
    state = torch.random.get_rng_state()
    m = SpeechToEGGTrainer(*pair, config=_config(engine=_engine(11)))
    assert torch.equal(state, torch.random.get_rng_state())  # construction leaves the global RNG alone
    m.fit()
    assert m.predict(pair[0]).shape == (len(pair[0]),)
    x = torch.randn(103)
    assert torch.allclose(overlap_add(frame_signal(x, 16, 5), 5, 103), x)


def test_bad_input(pair):
    with pytest.raises(ValueError, match="ae_steps"):
        _config(ae_steps=20)
    with pytest.raises(ValueError, match="hop"):
        _config(hop=64)
    with pytest.raises(ValueError, match="divergence"):
        _config(divergence="no_such")
    with pytest.raises(ValueError, match="speech"):
        SpeechToEGGTrainer(pair[0], pair[1][:-1], config=_config())
    with pytest.raises(ValueError, match="kernel"):
        _config(kernel=4)
    with pytest.raises(ValueError, match="x"):
        frame_signal(torch.zeros(2, 8), 4, 2)
    m = SpeechToEGGTrainer(*pair, config=_config())
    with pytest.raises(ValueError, match="speech"):
        m.predict(np.zeros((2, 400)))  # stereo where mono is needed
    with pytest.raises(ValueError, match="speech"):
        m.predict(np.zeros(0))
    with pytest.raises(ValueError, match="speech"):
        SpeechToEGGTrainer(np.full(100, np.nan), np.zeros(100), config=_config())
    with pytest.raises(ValueError, match="window"):
        overlap_add(torch.zeros(3, 4), 2, 8, window=torch.zeros(4))


def test_windowed_overlap_add_is_the_weighted_mean():
    frames = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = overlap_add(frames, 2, 6, window=w)
    # samples 2, 3 are covered by frame 0 (weights 3, 4) and frame 1 (weights 1, 2)
    expected = [1.0, 2.0, (3 * 3 + 1 * 10) / 4, (4 * 4 + 2 * 20) / 6, 30.0, 40.0]
    assert out.tolist() == pytest.approx(expected)


def test_egg_loss_and_normalisation_by_hand():
    pred, egg = torch.tensor([[0.0, 1.0, 1.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    # mse = 1/3; differences (1, 0) vs (0, 1): mse 1
    assert float(egg_loss(pred, egg, 2.0)) == pytest.approx(1 / 3 + 2.0)
    assert float(egg_loss(pred, egg, 0.0)) == pytest.approx(1 / 3)
    x = normalize_speech(torch.tensor([[3.0, -4.0], [0.0, 0.0]]))
    assert x[0].tolist() == pytest.approx([3 / 12.5 ** 0.5, -4 / 12.5 ** 0.5]) and x[1].tolist() == [0.0, 0.0]


def test_training_resumes_exactly_across_the_phase_boundary(pair, tmp_path):
    def run(out, steps, resume=False):
        engine = EngineConfig(max_steps=steps, log_every=1, progress=False, tensorboard=False, cpu=True, seed=0,
                              out_dir=str(out), checkpoint_every=2)
        m = SpeechToEGGTrainer(*pair, config=_config(ae_steps=1, adv_weight=0.5, engine=engine))
        result = m.fit(resume=resume)
        return torch.nn.ModuleList([m.egg_encoder, m.decoder, m.speech_encoder, m.critic]), result

    assert_resumes_exactly(run, tmp_path)
