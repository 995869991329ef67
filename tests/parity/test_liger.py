"""Parity with Liger-Kernel's loss tests: ``test/transformers/test_jsd.py``, ``test_kl_div.py``, ``test_tvd.py``
and ``test_fused_linear_jsd.py``.

Liger itself is not installed (it needs a GPU); the reference is a float64 computation written here from
the formulas, on the upstream inputs (``randn`` rows, ``log_softmax``/``softmax``), betas, temperatures,
``ignore_index`` values, dtypes and tolerances (``torch.allclose``: ``|a - b| <= atol + rtol |b|``).
Shapes keep the upstream vocabularies and cut the rows (``B * T``) to CPU sizes; the two cases that
show the known float32 defects run at the upstream size.

Deliberate differences, each stated where it applies (and in docs/design.md):

* divmin takes **logits**, Liger log-probabilities (JSD, KL) or probabilities (TVD). Log-probabilities
  are valid logits, so the losses agree; the gradients are w.r.t. the logits (the log-prob gradient
  projected on the simplex's tangent), so the reference gradient is taken w.r.t. logits too.
* Liger's JSD and TVD "batchmean" divide by the counted rows: divmin's ``"mean"`` reduction and
  ``token_kd_loss`` do the same (the mean over counted positions); torch's elementwise ``"mean"``
  (divided by rows x V) is not offered.
* Argument order: Liger's ``jsd(input=student, target=teacher)`` and ``KLDivLoss(input, target)`` are
  model first, as divmin's; ``KLDivLoss(log q, p)`` is ``KL(p || q)``, divmin's ``forward_kl``.
* Liger's JSD ``beta`` is divmin's ``generalized_js(beta)`` (weight of ``KL(P || M)``, M = beta P +
  (1 - beta) Q); its beta = 0 / 1 are forward / reverse KL, which divmin names as such.
"""

from __future__ import annotations

import pytest
import torch

from divmin import categorical_divergence, divergence
from divmin.distill import fused_linear_kd_loss, token_kd_loss

F64, F32, BF16, F16 = torch.float64, torch.float32, torch.bfloat16, torch.float16

# upstream (dtype, atol, rtol): test_jsd.py _DTYPE_PARAMS; test_kl_div.py / test_tvd.py use atol 1e-8 in float32
JSD_DTYPES = [(F32, 1e-7, 1e-6), (BF16, 1e-7, 5e-2), (F16, 1e-3, 1e-3)]
KL_DTYPES = [(F32, 1e-8, 1e-6), (BF16, 1e-8, 5e-2), (F16, 1e-3, 1e-3)]
TVD_DTYPES = [(F32, 1e-8, 1e-6), (BF16, 1e-8, 5e-2)]  # upstream turns float16 off
# (B, T, V): upstream (2, 1024, 3200) and (41, 401, 1271) with B * T cut to CPU sizes
SHAPES = [(2, 64, 3200), (41, 7, 1271)]



def _allclose(got, want, atol, rtol, what=""):
    got, want = got.double(), want.double()
    bad = (got - want).abs() > atol + rtol * want.abs()
    assert not bool(bad.any()), (f"{what}: {int(bad.sum())} of {bad.numel()} entries off; worst "
                                 f"{float(((got - want).abs() - rtol * want.abs()).max()):.3g} over atol {atol}")


def _rows(n, v, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, v, generator=g).to(dtype)


def _gjs_rows(logq, logp, beta):
    """Per-row generalized JS in float64 from log-probabilities (Liger's JSD module, written from its formula)."""
    p, q = logp.exp(), logq.exp()
    if beta == 0.0:
        return (p * (logp - logq)).sum(-1)
    if beta == 1.0:
        return (q * (logq - logp)).sum(-1)
    log_m = torch.log(beta * p + (1 - beta) * q)
    return beta * (p * (logp - log_m)).sum(-1) + (1 - beta) * (q * (logq - log_m)).sum(-1)


def _jsd_member(beta):
    return {0.0: "forward_kl", 1.0: "reverse_kl"}.get(beta) or divergence("generalized_js", beta=beta)


def _masked_mean(rows, labels, ignore_index):
    keep = torch.ones_like(rows, dtype=torch.bool) if labels is None else labels != ignore_index
    n = int(keep.sum())
    return rows[keep].sum() / n if n else rows.sum() * 0


def _check_jsd(n, v, dtype, atol, rtol, beta, ignore_index=None, seed=42):
    g = torch.Generator().manual_seed(seed)  # upstream: set_seed(42), input then target from the global RNG
    student = torch.randn(n, v, generator=g).to(dtype).float().log_softmax(-1).to(dtype)
    teacher = torch.randn(n, v, generator=g).to(dtype).float().log_softmax(-1).to(dtype)
    labels = None
    if ignore_index is not None:  # upstream: a random number of positions, up to half, set to ignore_index
        g = torch.Generator().manual_seed(seed + 2)
        labels = torch.randint(0, v, (n,), generator=g)
        k = int(torch.randint(1, n // 2, (1,), generator=g))
        labels[torch.randperm(n, generator=g)[:k]] = ignore_index
    x = student.clone().requires_grad_(True)
    kw = {} if labels is None else dict(labels=labels, ignore_index=ignore_index)
    loss = token_kd_loss(x, teacher, divergence=_jsd_member(beta), **kw)
    loss.backward()
    x64 = student.double().requires_grad_(True)
    want = _masked_mean(_gjs_rows(x64.log_softmax(-1), teacher.double().log_softmax(-1), beta), labels,
                        ignore_index if labels is not None else None)
    want.backward()
    _allclose(loss, want, atol, rtol, "loss")
    _allclose(x.grad, x64.grad, atol, rtol, "grad")
    return loss, teacher, student


@pytest.mark.parametrize("dtype, atol, rtol", JSD_DTYPES, ids=str)
@pytest.mark.parametrize("B, T, V", SHAPES)
def test_jsd_correctness(B, T, V, dtype, atol, rtol):
    """test_jsd.py::test_correctness: beta 0.5, plus upstream's symmetry check jsd(x, t) == jsd(t, x)."""
    loss, teacher, student = _check_jsd(B * T, V, dtype, atol, rtol, 0.5)
    swapped = token_kd_loss(teacher, student, divergence=_jsd_member(0.5))
    _allclose(swapped, loss, atol, rtol, "symmetry")


def _beta_cases():
    for shape in SHAPES:
        for dtype, atol, rtol in JSD_DTYPES:
            for beta in (0.0, 0.1, 0.5, 0.9, 1.0):
                yield pytest.param(*shape, beta, dtype, atol, rtol, id=f"{shape}-{beta}-{dtype}")


@pytest.mark.parametrize("B, T, V, beta, dtype, atol, rtol", list(_beta_cases()))
def test_jsd_correctness_with_beta(B, T, V, beta, dtype, atol, rtol):
    """test_jsd.py::test_correctness_with_beta: beta in {0, 0.1, 0.5, 0.9, 1}."""
    _check_jsd(B * T, V, dtype, atol, rtol, beta)


@pytest.mark.parametrize("ignore_index", [2, 42])
@pytest.mark.parametrize("dtype, atol, rtol", JSD_DTYPES, ids=str)
@pytest.mark.parametrize("B, T, V", SHAPES)
def test_jsd_correctness_with_ignore_index(B, T, V, ignore_index, dtype, atol, rtol):
    """test_jsd.py::test_correctness_with_ignore_index: labels in [0, V), some set to ignore_index (2 or 42),
    which is a valid token id: those positions count neither in the sum nor in the count."""
    _check_jsd(B * T, V, dtype, atol, rtol, 0.5, ignore_index=ignore_index)


@pytest.mark.parametrize("beta, ignore_index", [(0.5, 2), (0.1, 42)])
@pytest.mark.parametrize("dtype, atol, rtol", JSD_DTYPES, ids=str)
@pytest.mark.parametrize("B, T, V", SHAPES)
def test_jsd_correctness_functional(B, T, V, beta, ignore_index, dtype, atol, rtol):
    """test_jsd.py::test_correctness_functional: (beta, ignore_index) in {(0.5, 2), (0.1, 42)}."""
    _check_jsd(B * T, V, dtype, atol, rtol, beta, ignore_index=ignore_index)


def test_jsd_upstream_size_float32_beta_0_1():
    """test_jsd.py::test_correctness_with_beta at the upstream size 2 x 1024 x 3200, float32, beta 0.1, on
    upstream's draws (seed 42, input then target): divmin 0.08047634, float64 0.08047619. The relative
    error 1.9e-6 (issue 26: the float32 mixture) exceeds rtol 1e-6 alone but not upstream's
    ``allclose(atol=1e-7, rtol=1e-6)``, which this keeps."""
    _check_jsd(2 * 1024, 3200, F32, 1e-7, 1e-6, 0.1)


# --- test_kl_div.py ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["batchmean", "sum"])
@pytest.mark.parametrize("log_target", [True, False])
@pytest.mark.parametrize("dtype, atol, rtol", KL_DTYPES, ids=str)
@pytest.mark.parametrize("B, T, V", [(1, 64, 32000), (41, 7, 1271)])
def test_kl_div_correctness(B, T, V, log_target, reduction, dtype, atol, rtol):
    """test_kl_div.py::test_correctness: upstream shapes (1, 4096, 32000) and (41, 401, 1271) with fewer rows.

    ``KLDivLoss(input=log q, target=p)`` is divmin's forward KL with the model first. ``log_target`` only
    changes how upstream passes p (log-probabilities or probabilities): divmin takes the target as logits
    either way, here ``log p``. Upstream's reductions "batchmean" and "sum" are divmin's "mean" and "sum";
    its elementwise "mean" and "none" have no divmin counterpart (divmin's "none" is per row).
    """
    n = B * T
    x_lp = _rows(n, V, dtype, 0).float().log_softmax(-1).to(dtype)  # upstream: randn(...).log_softmax
    target_p = _rows(n, V, F32, 1).softmax(-1)  # upstream: randn(...).softmax, float32
    # upstream passes p (log_target=False) or log p (True); divmin takes logits, log p in both cases,
    # so the two parametrizations are one divmin call: kept to mirror the upstream case list
    target_logits = target_p.log()
    x = x_lp.clone().requires_grad_(True)
    loss = categorical_divergence(x, target_logits, divergence="forward_kl",
                                  reduction="mean" if reduction == "batchmean" else "sum")
    loss.backward()
    x64 = x_lp.double().requires_grad_(True)
    p64 = target_p.double()
    rows = (p64 * (p64.log() - x64.log_softmax(-1))).sum(-1)
    want = rows.mean() if reduction == "batchmean" else rows.sum()
    want.backward()
    _allclose(loss, want, atol, rtol, "loss")
    _allclose(x.grad, x64.grad, atol, rtol, "grad")


# --- test_tvd.py ------------------------------------------------------------------------------------------------

def _check_tvd(n, v, dtype, atol, rtol, reduction, ignore_index=None, seed=0):
    """Upstream: input = randn (fed to Liger as if probabilities), target = randn.softmax. divmin takes the
    input as logits: the model distribution is softmax(input), the reference |softmax(input) - target| / 2."""
    logits = _rows(n, v, dtype, seed)
    target_logits = _rows(n, v, F32, seed + 1)
    labels = None
    if ignore_index is not None:
        g = torch.Generator().manual_seed(seed + 2)
        labels = torch.randint(0, v, (n,), generator=g)
        k = int(torch.randint(1, n // 2, (1,), generator=g))
        labels[torch.randperm(n, generator=g)[:k]] = ignore_index
    x = logits.clone().requires_grad_(True)
    mask = None if labels is None else labels != ignore_index
    loss = categorical_divergence(x, target_logits, divergence="total_variation", mask=mask,
                                  reduction="mean" if reduction == "batchmean" else "sum")
    loss.backward()
    x64 = logits.double().requires_grad_(True)
    rows = 0.5 * (x64.softmax(-1) - target_logits.double().softmax(-1)).abs().sum(-1)
    if mask is not None:
        rows = rows[mask]
    want = rows.mean() if reduction == "batchmean" else rows.sum()
    want.backward()
    _allclose(loss, want, atol, rtol, "loss")
    # Deliberate difference: upstream differentiates |p - q| / 2 w.r.t. the probabilities it is given, so its
    # sign(p - q) is exact; divmin takes logits and forms p by a float32 softmax (a few ulp over 32000 terms,
    # 5.5 ulp seen), which cannot order P and Q closer than that. The sign is taken from the probabilities (never from the float32 log-ratio,
    # issue 26); entries tied below float32 softmax resolution are left out of the gradient comparison, and
    # must be rare.
    p64, q64 = x64.detach().softmax(-1), target_logits.double().softmax(-1)
    tie = (p64 - q64).abs() <= 16 * torch.finfo(torch.float32).eps * torch.maximum(p64, q64)
    assert int(tie.sum()) <= 16, int(tie.sum())  # a handful of 2M entries
    _allclose(x.grad.double().masked_fill(tie, 0), x64.grad.masked_fill(tie, 0), atol, rtol, "grad")


def _tvd_cases():
    for shape in [(1, 64, 32000), (32, 4, 1024), (41, 7, 1271), (3, 5, 32000)]:
        for dtype, atol, rtol in TVD_DTYPES:
            for reduction in ("batchmean", "sum"):
                # V = 32000 draws entries with P and Q equal to ~3e-7 relative: the gradient's sign is taken
                # from the probabilities, not from the float32 log-ratio (which got it wrong there, issue 26)
                yield pytest.param(*shape, reduction, dtype, atol, rtol,
                                   id=f"{shape}-{dtype}-{reduction}")


@pytest.mark.parametrize("B, T, V, reduction, dtype, atol, rtol", list(_tvd_cases()))
def test_tvd_correctness(B, T, V, reduction, dtype, atol, rtol):
    """test_tvd.py::test_correctness: upstream shapes (1, 4096, 32000), (32, 4096, 1024), (41, 401, 1271),
    (3, 423, 32000) with fewer rows; reductions "batchmean" (divmin "mean") and "sum"."""
    _check_tvd(B * T, V, dtype, atol, rtol, reduction)


@pytest.mark.parametrize("ignore_index", [-100, 0, 1])
@pytest.mark.parametrize("reduction", ["batchmean", "sum"])
@pytest.mark.parametrize("dtype, atol, rtol", TVD_DTYPES, ids=str)
def test_tvd_correctness_with_ignore_index(reduction, ignore_index, dtype, atol, rtol):
    """test_tvd.py::test_correctness_with_ignore_index on (41, 7, 1271); divmin takes the ignored positions as
    ``mask`` (``token_kd_loss`` takes ``labels`` / ``ignore_index``)."""
    _check_tvd(41 * 7, 1271, dtype, atol, rtol, reduction, ignore_index=ignore_index)


# --- test_fused_linear_jsd.py -----------------------------------------------------------------------------------

@pytest.mark.parametrize("temperature, beta, ignore_index", [(1.0, 0.5, 2), (1.0, 0.0, 2), (1.0, 1.0, 2),
                                                             (2.0, 0.1, 42), (1.0, 0.5, -100)])
@pytest.mark.parametrize("dtype, atol, rtol", [(F32, 1e-5, 5e-4), (BF16, 5e-3, 5e-2)], ids=str)
def test_fused_linear_jsd_correctness(temperature, beta, ignore_index, dtype, atol, rtol):
    """test_fused_linear_jsd.py::test_correctness(_with_ignore_index / _functional): upstream's random shape
    (B, T, H, V) = (4, 423, 167, 1423) with B * T cut to 4 x 32; student head (V, H // 2), teacher (V, H),
    weights and inputs ``torch.rand`` (scalar 1); loss and gradients w.r.t. the student input and head.

    Liger applies the temperature without a T^2 factor, as divmin does. The head weights here are
    passed as (V, H), Liger's nn.Linear layout, which is divmin's too.
    """
    B, T, H, V = 4, 32, 167, 1423
    n = B * T
    g = torch.Generator().manual_seed(0)
    ws = torch.rand(V, H // 2, generator=g).to(dtype)
    wt = torch.rand(V, H, generator=g).to(dtype)
    hs = torch.rand(n, H // 2, generator=g).to(dtype)
    ht = torch.rand(n, H, generator=g).to(dtype)
    labels = torch.randint(0, V, (n,), generator=g)
    k = int(torch.randint(1, n // 2, (1,), generator=g))
    labels[torch.randperm(n, generator=g)[:k]] = ignore_index
    hs_, ws_ = hs.clone().requires_grad_(True), ws.clone().requires_grad_(True)
    loss = fused_linear_kd_loss(hs_, ws_, ht, wt, divergence=_jsd_member(beta), labels=labels,
                                ignore_index=ignore_index, temperature=temperature)
    loss.backward()
    hs64, ws64 = hs.double().requires_grad_(True), ws.double().requires_grad_(True)
    logq = (hs64 @ ws64.T / temperature).log_softmax(-1)
    logp = (ht.double() @ wt.double().T / temperature).log_softmax(-1)
    want = _masked_mean(_gjs_rows(logq, logp, beta), labels, ignore_index)
    want.backward()
    _allclose(loss, want, atol, rtol, "loss")
    _allclose(hs_.grad, hs64.grad, atol, rtol, "grad input")
    _allclose(ws_.grad, ws64.grad, atol, rtol, "grad weight")
