"""Fuzz the public losses and divergences at their boundary: every outcome is a correct value or a clear error.

See ``_harness.py`` for the rule. Seeded and bounded (``FUZZ``), so CI runs the same cases.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from divmin import available_divergences, categorical_divergence, divergence
from divmin.align import fdpg_loss, fdpo_loss
from divmin.diffusion import fdistill_surrogate
from divmin.distill import TopKTeacher, token_kd_loss
from divmin.estimators import logistic_discriminator_loss, score_function_surrogate

from ._harness import FUZZ, classify
from ._strategies import log_probs, scalars, tensors

F_MEMBERS = available_divergences("f")
OK = ("value", "clear error")
shapes = st.tuples(st.integers(0, 3), st.integers(0, 5))


@pytest.mark.parametrize("name", F_MEMBERS)
@FUZZ
@given(log_r=tensors((6,), low=-60, high=60, dtypes=(torch.float16, torch.bfloat16, torch.float32, torch.float64)))
def test_elementwise_f_g_h_never_nan_without_nan(name, log_r):
    d = divergence(name)
    for method in ("f", "g", "h", "log_h"):
        outcome = classify(f"Divergence.{method}", getattr(d, method), log_r, may_be_inf=True)
        assert outcome in OK, (name, method, log_r, outcome)


@pytest.mark.parametrize("name", F_MEMBERS + ["sinkhorn", "nope"])
@FUZZ
@given(data=st.data(), shape=shapes, temperature=scalars())
def test_categorical_divergence(name, data, shape, temperature):
    model = data.draw(tensors(shape))
    target = data.draw(tensors(data.draw(st.sampled_from([shape, (shape[0], shape[1] + 1)]))))
    if model.is_floating_point():
        model.requires_grad_(True)
    power = name in ("pearson_chi2", "neyman_chi2", "jeffreys", "forward_kl", "alpha")
    outcome = classify("categorical_divergence", categorical_divergence, model, target, divergence=name,
                       temperature=temperature, may_be_inf=power)
    assert outcome in OK, (name, model, target, temperature, outcome)


@FUZZ
@given(data=st.data(), n=st.integers(0, 4), beta=scalars(), smoothing=st.sampled_from([0.0, 0.1, 0.5, -0.1]),
       name=st.sampled_from(F_MEMBERS))
def test_fdpo_loss(data, n, beta, smoothing, name):
    tensors4 = [data.draw(log_probs(n)) for _ in range(4)]
    if data.draw(st.booleans()):  # half the cases valid: finite float log-probabilities, a usable beta
        clean = tensors((max(n, 1),), dtypes=(torch.float32, torch.float64), specials=False, low=-30.0, high=0.0)
        tensors4 = [data.draw(clean).neg().abs().neg() for _ in range(4)]
        tensors4 = [t.to(tensors4[0].dtype) for t in tensors4]
        beta, smoothing = data.draw(st.sampled_from([0.05, 0.1, 1.0])), 0.0
        name = data.draw(st.sampled_from([m for m in F_MEMBERS if divergence(m).supports("implicit_reward")]))
    outcome = classify("fdpo_loss", fdpo_loss, *tensors4, divergence=name, beta=beta, label_smoothing=smoothing)
    assert outcome in OK, (tensors4, beta, smoothing, name, outcome)


@FUZZ
@given(data=st.data(), n=st.integers(0, 4), name=st.sampled_from(F_MEMBERS), log_z=scalars(),
       offline=st.booleans())
def test_fdpg_loss(data, n, name, log_z, offline):
    policy = data.draw(log_probs(n))
    if policy.is_floating_point():
        policy.requires_grad_(True)
    scores = data.draw(tensors((n,)))
    proposal = data.draw(log_probs(n)) if offline else None
    outcome = classify("fdpg_loss", fdpg_loss, policy, scores, divergence=name, proposal_logps=proposal,
                       log_z=log_z if isinstance(log_z, float) else None)
    assert outcome in OK, (policy, scores, proposal, log_z, name, outcome)


@FUZZ
@given(data=st.data(), n=st.integers(0, 4), name=st.sampled_from(F_MEMBERS), baseline=scalars())
def test_score_function_surrogate(data, n, name, baseline):
    logps = data.draw(log_probs(n))
    if logps.is_floating_point():
        logps.requires_grad_(True)
    log_ratio = data.draw(tensors((n,)))
    outcome = classify("score_function_surrogate", score_function_surrogate, logps, log_ratio, divergence=name,
                       baseline=baseline)
    assert outcome in OK, (logps, log_ratio, baseline, name, outcome)


@FUZZ
@given(data=st.data(), n=st.integers(0, 3), name=st.sampled_from(F_MEMBERS), normalize=st.booleans())
def test_fdistill_surrogate(data, n, name, normalize):
    x = data.draw(tensors((n, 2), dtypes=(torch.float32, torch.float64, torch.int64)))
    if x.is_floating_point():
        x.requires_grad_(True)
    fake, teacher = data.draw(tensors((n, 2))), data.draw(tensors((n, 2)))
    log_ratio = data.draw(tensors((n,), low=-120, high=120))
    outcome = classify("fdistill_surrogate", fdistill_surrogate, x, fake, teacher, log_ratio, divergence=name,
                       normalize=normalize, may_be_inf=not normalize)
    assert outcome in OK, (x, fake, teacher, log_ratio, name, normalize, outcome)


@FUZZ
@given(data=st.data(), n=st.integers(0, 4), m=st.integers(0, 4), smoothing=scalars())
def test_logistic_discriminator_loss(data, n, m, smoothing):
    model, target = data.draw(tensors((n,))), data.draw(tensors((m,)))
    outcome = classify("logistic_discriminator_loss", logistic_discriminator_loss, model, target,
                       label_smoothing=smoothing if smoothing is not None else 0.0)
    assert outcome in OK, (model, target, smoothing, outcome)


@FUZZ
@given(data=st.data(), shape=shapes, name=st.sampled_from(F_MEMBERS), temperature=scalars(), sparse=st.booleans())
def test_token_kd_loss(data, shape, name, temperature, sparse):
    student = data.draw(tensors(shape))
    if student.is_floating_point():
        student.requires_grad_(True)
    if sparse:
        k = data.draw(st.integers(1, 3))
        offset = data.draw(st.integers(0, 5))  # distinct ids per row, possibly beyond the vocabulary
        ids = (torch.arange(k) + offset).expand(shape[0], k).clone()
        teacher = TopKTeacher(data.draw(tensors((shape[0], k), low=-10, high=0)), ids)
    else:
        teacher = data.draw(tensors(shape))
    if data.draw(st.booleans()):  # half the cases valid: finite float logits of one shape
        shape = (max(shape[0], 1), max(shape[1], 1))
        clean = tensors(shape, dtypes=(torch.float32, torch.float64, torch.bfloat16), specials=False)
        student, teacher = data.draw(clean).requires_grad_(True), data.draw(clean)
        temperature = data.draw(st.sampled_from([0.5, 1.0, 2.0]))
    outcome = classify("token_kd_loss", token_kd_loss, student, teacher, divergence=name, temperature=temperature,
                       may_be_inf=True)
    assert outcome in OK, (student, teacher, name, temperature, outcome)


@FUZZ
@given(data=st.data(), n=st.integers(0, 3), m=st.integers(0, 3), epsilon=scalars(), tol=scalars())
def test_sinkhorn(data, n, m, epsilon, tol):
    from divmin import sinkhorn

    a = data.draw(tensors((n,), low=0.0, high=1.0, dtypes=(torch.float32, torch.float64, torch.int64)))
    b = data.draw(tensors((m,), low=0.0, high=1.0, dtypes=(torch.float32, torch.float64)))
    if a.is_floating_point() and a.numel() and bool(torch.isfinite(a).all()) and float(a.sum()) > 0:
        a = a / a.sum()
    if b.numel() and bool(torch.isfinite(b).all()) and float(b.sum()) > 0:
        b = b / b.sum()
    cost = data.draw(tensors((n, m), low=0.0, high=4.0, dtypes=(torch.float32, torch.float64)))
    if data.draw(st.booleans()):  # half the cases valid: uniform marginals, a finite cost, a usable epsilon
        n, m = max(n, 1), max(m, 1)
        a, b = torch.full((n,), 1 / n, dtype=torch.float64), torch.full((m,), 1 / m, dtype=torch.float64)
        cost = data.draw(tensors((n, m), low=0.0, high=4.0, dtypes=(torch.float64,), specials=False))
        epsilon = data.draw(st.sampled_from([0.05, 0.5, 2.0]))
    outcome = classify("sinkhorn", lambda *a_, **k: sinkhorn(*a_, **k).objective, a, b, cost,
                       epsilon=epsilon, tol=tol if isinstance(tol, float) else 1e-6, max_iter=200)
    assert outcome in OK, (a, b, cost, epsilon, tol, outcome)
