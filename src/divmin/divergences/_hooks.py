"""A member's fast paths, found from its class: the torch ``terms`` and the GPU ``triton_terms``.

Both compute the categorical terms ``F = Q f(P/Q)``, ``B = Q g(P/Q)`` that
:class:`~divmin.Divergence` otherwise derives from f, g and the perspective. A fast
path computes the math of the class that wrote it, so a subclass inherits it only
while it leaves that math alone: a subclass that overrides one of :data:`TERMS_MATH`
(or ``terms``) without writing its own fast paths gets the generic torch terms
(correct, from its own f and g) and no Triton terms, which :attr:`has_triton_terms`
says and the ``"auto"`` backend reports once (``_backend.py``); it never runs its
parent's kernel.

Nothing here imports triton: members name their device functions in ``triton_terms``,
which runs only when the Triton backend is asked for.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from ._base import Divergence

__all__ = ["TERMS_MATH", "TritonTerms", "deprecated_categorical_terms", "kernel_terms", "settle_hooks"]

# The methods the categorical terms are made of (``_terms.generic_categorical_terms``); h and
# log_h are not among them (the closed form never reads them).
TERMS_MATH = ("f", "g", "f_nonpos", "weighted_f", "weighted_g", "perspective")


class TritonTerms(NamedTuple):
    """A member's GPU terms: a ``@triton.jit`` device function and the three constants it is passed.

    The kernel (``divmin.divergences._triton``) calls ``fn(lq, lp, q, p, c0, c1, c2)`` on a block
    of one row, model first: float32 log-probabilities ``lq = log Q``, ``lp = log P`` and the
    probabilities ``q``, ``p``; it expects ``(F, B)`` as :meth:`~divmin.Divergence.terms` returns
    them, with the same limits at zero probabilities. ``constants`` carry the member's parameters
    (each rounded to float32, as a GPU launch passes it).
    """

    fn: Any
    constants: tuple[float, float, float] = (0.0, 0.0, 0.0)


def kernel_terms(name: str, constants: Callable[[Any], tuple[float, float, float]] | None = None) -> Callable:
    """A ``triton_terms`` method returning divmin's device function ``name`` (``_triton_terms.py``).

    ``constants(member)`` gives the member's three constants (zeros when None). The module
    holding the device functions imports triton, so it is imported when the method runs.
    """

    def triton_terms(self: Any) -> TritonTerms:
        from . import _triton_terms

        return TritonTerms(getattr(_triton_terms, name), (0.0, 0.0, 0.0) if constants is None else constants(self))

    triton_terms.__doc__ = f"Triton terms: ``{name}`` of ``divmin.divergences._triton_terms``."
    return triton_terms


def _target_first_terms(self: Any, model_logp: Tensor, target_logp: Tensor, *, with_grad: bool = False,
                        model_p: Tensor | None = None, target_p: Tensor | None = None) -> Any:
    """``terms`` of a class written for the deprecated target-first hook ``categorical_terms``."""
    return self.categorical_terms(target_logp, model_logp, with_grad, target_p, model_p)


_target_first_terms.adapts = True  # type: ignore[attr-defined]


def inherited_terms(cls: type) -> Callable:
    """The nearest ``terms`` in ``cls``'s MRO that is not an adapter of the target-first hook."""
    for klass in cls.__mro__:
        fn = klass.__dict__.get("terms")
        if fn is not None and not getattr(fn, "adapts", False):
            return fn
    raise TypeError(f"{cls.__name__} has no `terms`")  # pragma: no cover (Divergence defines it)


def deprecated_categorical_terms(self: Any, logp: Tensor, logq: Tensor, with_grad: bool, p: Tensor | None = None,
                                 q: Tensor | None = None) -> Any:
    """Deprecated, target first: ``terms(logq, logp, with_grad=..., model_p=q, target_p=p)``."""
    warnings.warn("Divergence.categorical_terms(logp, logq, ...) is target-first and deprecated; use "
                  "terms(model_logp, target_logp, *, with_grad, model_p, target_p)", DeprecationWarning, stacklevel=2)
    return inherited_terms(type(self))(self, logq, logp, with_grad=with_grad, model_p=q, target_p=p)


def settle_hooks(cls: type, base: type["Divergence"]) -> None:
    """Decide, when ``cls`` is defined, which ``terms`` and ``triton_terms`` it has (module docstring)."""
    own = set(cls.__dict__)  # a copy: the assignments below must not count as the class's own
    changed = [name for name in TERMS_MATH if name in own]
    if "categorical_terms" in own and "terms" not in own:
        warnings.warn(f"{cls.__name__} overrides the target-first `categorical_terms(logp, logq, ...)`, "
                      "deprecated: write `terms(model_logp, target_logp, *, with_grad, model_p, target_p)` "
                      "(model first); it is used through an adapter meanwhile", DeprecationWarning, stacklevel=3)
        cls.terms = _target_first_terms
        changed.append("categorical_terms")
    elif changed and "terms" not in own:
        cls.terms = base.terms  # the parent's fast path computes the parent's f: derive from this f
    if "terms" in own:
        changed.append("terms")
    if "triton_terms" in own:
        cls.has_triton_terms, cls._triton_missing = True, None
    elif changed:
        parent = next((k for k in cls.__mro__[1:] if getattr(k, "has_triton_terms", False)), None)
        cls.triton_terms = base.triton_terms
        cls.has_triton_terms = False
        cls._triton_missing = (f"{cls.__name__} defines no `triton_terms`" if parent is None else
                               f"{cls.__name__} overrides {', '.join(changed)} of {parent.__name__} but "
                               "defines no `triton_terms` of its own (the parent's kernel computes the parent's "
                               "terms)")
