"""Teacher caches: k = V reproduces the live teacher, resume equals one go, checksums, refusals, encodings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.special import rel_entr
from torch import nn

from divmin.distill import DistillConfig, DistillTrainer, TeacherCache, cache_teacher, token_kd_loss
from divmin.distill._cache_io import bytes_per_token, decode, encode, id_bytes, pack_ids, unpack_ids
from divmin.engine import EngineConfig
from divmin.lm import IGNORE, LMCollator, tiny_gpt2, word_tokenizer

from ..divergences.conftest import members

V = 40


def _rows(n=23, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda lo, hi: int(torch.randint(lo, hi, (), generator=g))  # noqa: E731
    return [{"prompt_ids": torch.randint(2, V, (r(1, 4),), generator=g).tolist(),
             "completion_ids": torch.randint(2, V, (r(0, 6),), generator=g).tolist()} for _ in range(n)]


def _teacher(seed=0):
    return tiny_gpt2(V, seed=seed, n_layer=1, n_embd=16, n_positions=16)


def _live(teacher, rows, temperature):
    """(completion-token teacher logits / T, labels) of one batch of ``rows``, as DistillTrainer sees them."""
    b = LMCollator(0)(rows)
    with torch.no_grad():
        logits = teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                         position_ids=b["position_ids"]).logits
    return logits[b["labels"] != IGNORE]


@pytest.fixture(scope="module")
def full_cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("full")
    teacher, rows = _teacher(), _rows()
    cache_teacher(teacher, rows, d, top_k=V, temperature=1.5, dtype="float32", rows_per_shard=5, batch_size=3)
    return teacher, rows, TeacherCache(d)


@members
@pytest.mark.parametrize("tail", ["bucket", "renormalize", "uniform"])
def test_cache_with_k_equal_v_reproduces_live_loss_and_gradients(full_cache, div, tail):
    teacher, rows, cache = full_cache
    cache.tail = tail
    pick = [7, 2, 19, 11, 0]
    t = _live(teacher, [rows[i] for i in pick], 1.5)
    s = 2.0 * torch.randn(t.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    live = token_kd_loss(s1, t, divergence=div, temperature=1.5)
    cached = token_kd_loss(s2, cache(pick), divergence=div, temperature=1.5)
    torch.testing.assert_close(cached, live, rtol=1e-5, atol=1e-7)
    live.backward(), cached.backward()
    torch.testing.assert_close(s2.grad, s1.grad, rtol=1e-5, atol=1e-7)


def test_uniform_tail_spreads_the_stored_tail_mass_evenly_and_trains(tmp_path):
    teacher, rows = _teacher(), _rows()
    cache_teacher(teacher, rows, tmp_path / "c", top_k=5, temperature=2.0, dtype="float32", rows_per_shard=6)
    pick = [3, 17, 8]
    p = torch.softmax(_live(teacher, [rows[i] for i in pick], 2.0).double() / 2.0, -1).numpy()
    top = np.argsort(-p, -1)[:, :5]
    expected = np.empty_like(p)
    for r in range(p.shape[0]):  # the teacher's top 5, then its remaining mass in V - 5 equal parts
        rest = np.setdiff1d(np.arange(V), top[r])
        expected[r, top[r]] = p[r, top[r]]
        expected[r, rest] = p[r, rest].sum() / len(rest)
    s = torch.randn(p.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    q = torch.softmax(s / 2.0, -1).numpy()
    got = token_kd_loss(s, TeacherCache(tmp_path / "c", tail="uniform")(pick), temperature=2.0)
    np.testing.assert_allclose(float(got), rel_entr(expected, q).sum(-1).mean(), rtol=1e-5)
    cfg = DistillConfig(temperature=2.0, batch_size=8, engine=EngineConfig(max_steps=2, progress=False, seed=0))
    trainer = DistillTrainer(tiny_gpt2(V, seed=5, n_layer=1, n_embd=8, n_positions=16),
                             TeacherCache(tmp_path / "c", tail="uniform"), rows, config=cfg, pad_id=0)
    trainer.fit()
    with pytest.raises(ValueError, match="`tail` must be one of"):
        TeacherCache(tmp_path / "c", tail="spread")


def test_distill_trainer_with_a_full_cache_trains_as_with_the_live_teacher(tmp_path):
    teacher, rows = _teacher(), _rows(30, seed=2)
    cache_teacher(teacher, rows, tmp_path / "c", top_k=V, dtype="float32", rows_per_shard=7)
    params = {}
    for name, t in (("live", teacher), ("cache", TeacherCache(tmp_path / "c"))):
        cfg = DistillConfig(divergence="js", batch_size=8, lr=1e-2, engine=EngineConfig(
            max_steps=4, progress=False, tensorboard=False, seed=0, out_dir=str(tmp_path / name)))
        tr = DistillTrainer(tiny_gpt2(V, seed=5, n_layer=1, n_embd=8, n_positions=16), t, rows, config=cfg, pad_id=0)
        tr.fit()
        params[name] = torch.cat([p.detach().flatten() for p in tr.model.parameters()])
    init = torch.cat([p.detach().flatten() for p in tiny_gpt2(V, seed=5, n_layer=1, n_embd=8, n_positions=16)
                      .parameters()])
    # the two runs differ by float32 rounding of the teacher's log-probs (gradients agree to ~2e-9); Adam divides
    # by sqrt(v) + eps, which lifts that to ~1e-5 in the weights after 4 steps: 1e-4 is rounding, far below the move
    assert float((params["live"] - params["cache"]).abs().max()) < 1e-4
    assert float((params["live"] - init).abs().max()) > 1e-3  # training moved the weights


class _KilledAfter(nn.Module):
    """The teacher, but the n-th forward raises KeyboardInterrupt (a kill in the middle of the run)."""

    def __init__(self, teacher, n):
        super().__init__()
        self.teacher, self.left = teacher, n

    def state_dict(self, *args, **kwargs):  # the same weights: the same teacher fingerprint
        return self.teacher.state_dict(*args, **kwargs)

    def forward(self, **kw):
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt
        return self.teacher(**kw)


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if not p.name.endswith(".tmp")}


def test_killed_and_resumed_equals_one_go_and_other_settings_are_refused(tmp_path):
    teacher, rows = _teacher(), _rows()
    kw = dict(top_k=6, dtype="int8", rows_per_shard=4, batch_size=3, teacher_name="tiny")
    one = cache_teacher(teacher, rows, tmp_path / "one", **kw)
    with pytest.raises(KeyboardInterrupt):  # 6 shards of 2 forwards each: killed in the 4th shard
        cache_teacher(_KilledAfter(teacher, 7), rows, tmp_path / "two", **kw)
    assert not (tmp_path / "two" / "manifest.json").exists()
    assert len(list((tmp_path / "two").glob("shard-*.safetensors"))) == 3
    assert cache_teacher(teacher, rows, tmp_path / "two", **kw) == one
    assert _files(tmp_path / "two") == _files(tmp_path / "one")
    with pytest.raises(ValueError, match="other settings"):
        cache_teacher(teacher, rows, tmp_path / "two", **{**kw, "top_k": 7})


def test_corrupted_shard_is_detected_and_rewritten_on_resume(tmp_path):
    teacher, rows = _teacher(), _rows()
    kw = dict(top_k=5, dtype="float16", rows_per_shard=8)
    cache_teacher(teacher, rows, tmp_path, **kw)
    shard = tmp_path / "shard-00001.safetensors"
    good = shard.read_bytes()
    data = bytearray(good)
    data[-3] ^= 0x01  # one bit of one stored value
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="shard-00001.safetensors is missing or corrupted"):
        TeacherCache(tmp_path)
    cache_teacher(teacher, rows, tmp_path, **kw)  # the resumed run rewrites the shard that fails its checksum
    assert shard.read_bytes() == good
    TeacherCache(tmp_path)


def test_mismatched_temperature_tokenizer_or_token_ids_are_refused(tmp_path):
    words = ["[PAD]", "[EOS]", "[UNK]"] + [f"w{i}" for i in range(V - 3)]
    tok, other = word_tokenizer(words), word_tokenizer(words[:3] + words[4:] + words[3:4])
    text = [{"prompt": "w1 w2", "completion": "w3 w4 w5"}, {"prompt": "w7", "completion": "w8 [EOS]"}]
    cache_teacher(_teacher(), text, tmp_path, top_k=4, tokenizer=tok, temperature=2.0)
    cache = TeacherCache(tmp_path)
    assert cache.manifest["tokenizer_hash"] and cache.manifest["tokens"] == 5 and cache.temperature == 2.0
    student = tiny_gpt2(V, seed=1, n_layer=1, n_embd=8, n_positions=16)
    cfg = lambda **kw: DistillConfig(engine=EngineConfig(max_steps=1, progress=False), **kw)  # noqa: E731
    DistillTrainer(student, cache, text, tokenizer=tok, config=cfg(temperature=2.0))  # the matching setting
    with pytest.raises(ValueError, match="made at temperature 2.0, the distillation uses 1.0"):
        DistillTrainer(student, cache, text, tokenizer=tok, config=cfg())
    with pytest.raises(ValueError, match="another tokenizer"):
        DistillTrainer(student, cache, text, tokenizer=other, config=cfg(temperature=2.0))
    with pytest.raises(ValueError, match="other token ids"):
        DistillTrainer(student, cache, text[::-1], tokenizer=tok, config=cfg(temperature=2.0))
    with pytest.raises(ValueError, match="off-policy causal-LM KD .* lmbda=0.5"):
        DistillTrainer(student, cache, text, tokenizer=tok, config=cfg(temperature=2.0, lmbda=0.5))
    with pytest.raises(ValueError, match="no manifest.json"):
        TeacherCache(tmp_path / "nowhere")


@pytest.mark.parametrize("vocab", [2, 255, 256, 32000, 65536, 65537, 128256])
def test_ids_pack_to_the_vocabulary_width_and_back(vocab):
    width = id_bytes(vocab)
    assert 256 ** width >= vocab > 256 ** (width - 1) or width == 1
    ids = torch.randint(0, vocab, (7, 5), generator=torch.Generator().manual_seed(vocab))
    ids[0, 0] = vocab - 1
    packed = pack_ids(ids, width)
    assert packed.dtype == torch.uint8 and packed.shape == (7, 5, width)
    assert torch.equal(unpack_ids(packed), ids)


def _lm_like(n, vocab, seed):
    """Zipf-shaped next-token logits (rank r gets about -1.1 log r) with noise, in random id order."""
    g = torch.Generator().manual_seed(seed)
    ranks = torch.argsort(torch.rand(n, vocab, generator=g), -1).double() + 1
    return -1.1 * ranks.log() + 0.5 * torch.randn(n, vocab, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("dtype,bound", [("float32", 1e-6), ("float16", 4e-3), ("int8", None)])
def test_encodings_keep_the_row_a_distribution_and_bound_the_rounding(dtype, bound):
    lp = torch.log_softmax(_lm_like(50, 300, seed=3), -1).float()
    top = lp.topk(32, dim=-1).values
    top[0, -3:] = -math.inf  # rows may hold fewer than k candidates
    tail = torch.log1p(-top.exp().sum(-1).clamp(max=1 - 1e-7))
    back = decode({**encode(top, dtype), "log_tail": tail}, dtype)
    assert torch.equal(torch.isinf(back), torch.isinf(top))
    finite = torch.isfinite(top)
    err = (back - top)[finite].abs().max()
    if bound is None:  # int8: half a step of the row's range, plus the renormalisation's shift
        step = (top.max(-1).values - torch.where(finite, top, 0.0).min(-1).values) / 254
        bound = float(step.max())
    assert float(err) <= bound
    mass = torch.logsumexp(torch.cat([back, tail[:, None]], -1), -1)
    torch.testing.assert_close(mass, torch.zeros_like(mass), atol=2e-6, rtol=0)
    assert bytes_per_token(32, 32000, dtype) == {"float32": 196, "float16": 132, "int8": 108}[dtype]


@members
def test_bucket_error_against_the_full_logits_shrinks_with_k_to_zero(div):
    """Data processing: 0 <= D(full) - D(bucket, k) is non-increasing in k (nested top-k sets) and 0 at k = V."""
    vocab = 64
    t, s = _lm_like(40, vocab, seed=4), _lm_like(40, vocab, seed=5)
    full = float(token_kd_loss(s, t, divergence=div))
    lp = torch.log_softmax(t, -1)
    errs = []
    for k in (1, 4, 16, 32, 63, vocab):
        val, idx = lp.topk(k, dim=-1)
        got = float(token_kd_loss(s, _topk(val, idx), divergence=div))
        errs.append(full - got)
    assert all(e >= -1e-9 * max(1.0, abs(full)) for e in errs)
    assert all(a >= b - 1e-9 * max(1.0, abs(full)) for a, b in zip(errs, errs[1:]))
    assert abs(errs[-1]) <= 1e-9 * max(1.0, abs(full))


def _topk(val, idx, tail="bucket"):
    from divmin.distill import TopKTeacher

    return TopKTeacher(val, idx, tail)


def test_manifest_records_what_the_issue_asks(tmp_path):
    m = cache_teacher(_teacher(), _rows(), tmp_path, top_k=8, teacher_name="tiny", teacher_revision="abc")
    for key in ("teacher", "teacher_revision", "tokenizer_hash", "temperature", "top_k", "dtype", "tokens",
                "vocab_size", "data_hash"):
        assert key in m
    assert m["tokens"] == sum(len(r["completion_ids"]) for r in _rows())
    assert all(len(e["sha256"]) == 64 for e in m["shards"])
    assert json.loads((tmp_path / "manifest.json").read_text()) == m
    assert m["bytes_per_token"] == 8 * 1 + 8 + 8 + 4  # V = 40: one byte per id
    cache = TeacherCache(tmp_path)
    lp = cache(range(len(cache))).log_probs
    assert cache.topk_mass() == pytest.approx(float(torch.logsumexp(lp.double(), -1).exp().mean()), rel=1e-5)
