"""`MDLMConfig` and `MDLMTrainer`: a masked diffusion LM trained on the shared engine.

One engine step: draw a batch x_0 of sequences, t stratified over the batch, z_t by
masking each token with probability t, and minimise the mean per-token MDLM loss
(:func:`divmin.diffusion.mdlm_loss`, the continuous-time NELBO divided by L) with the
optimizer "denoiser". With a ``judge`` (anything with an exact ``log_prob(seqs)``, e.g.
:class:`divmin.data.MarkovLanguage`) the evaluation samples with ``eval_nfe`` steps and
logs the exact generative perplexity, the unigram entropy and a one-sample NELBO per token
of a fresh data batch.

Reference: Sahoo et al., "Simple and Effective Masked Diffusion Language Models" (2024).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import Tensor

from ..data import check_token_source
from ..engine import Bool, EngineConfig, Instance, Int, MethodTrainer, Number, StepContext, Tuple, validate
from ..eval import generative_perplexity, unigram_entropy
from ..lm import draw_token_batch
from ._mdlm import MaskedDiffusionLM, mdlm_loss, mdlm_sample, sample_times

__all__ = ["MDLMConfig", "MDLMTrainer"]

Sequences = Callable[[int, torch.Generator], Tensor]  # (n, CPU generator) -> (n, L) token ids


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=2000, log_every=100, max_grad_norm=1.0, progress=False, tensorboard=False)


@dataclasses.dataclass
class MDLMConfig:
    """Settings of :class:`MDLMTrainer`; every field is checked on construction."""

    batch_size: int = 64  # sequences per step
    lr: float = 3e-4  # AdamW learning rate of the denoiser
    weight_decay: float = 0.0  # AdamW weight decay
    adam_betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas
    t_min: float = 1e-3  # times are drawn in [t_min, 1) (the 1/t weight is unbounded at 0)
    antithetic: bool = True  # stratify t over the batch (lower-variance NELBO, as MDLM)
    eval_samples: int = 256  # samples per evaluation (needs a judge)
    eval_nfe: int = 16  # sampling steps at evaluation
    engine: EngineConfig = dataclasses.field(default_factory=_default_engine)  # max_steps = denoiser updates

    CHECKS = dict(  # one per field: divmin.engine.validate
        batch_size=Int(ge=1), lr=Number(gt=0), weight_decay=Number(ge=0),
        adam_betas=Tuple((Number(ge=0, lt=1), Number(ge=0, lt=1))), t_min=Number(ge=0, lt=1), antithetic=Bool(),
        eval_samples=Int(ge=1), eval_nfe=Int(ge=1), engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)


class MDLMTrainer(MethodTrainer):
    """Train ``model`` (a :class:`MaskedDiffusionLM`) on ``data``.

    Args:
        model: the MDLM; replaced by the trained one after ``fit()``.
        data: (N, L') token ids drawn from uniformly, or a callable (n, CPU torch.Generator) -> (n, L')
            (e.g. ``MarkovLanguage.sample``).
        config: :class:`MDLMConfig` (keyword; None: defaults).
        judge: optional exact likelihood ``log_prob(seqs) -> (N,)`` for the evaluation's
            generative perplexity.

    >>> from divmin.data import MarkovLanguage
    >>> from divmin.diffusion import MDLMTransformer
    >>> lang = MarkovLanguage(4, 5, seed=0)
    >>> lm = MaskedDiffusionLM(MDLMTransformer(4, 5, width=16, depth=1, heads=2), 4, 5)
    >>> cfg = MDLMConfig(batch_size=8, engine=EngineConfig(max_steps=2, progress=False, tensorboard=False))
    >>> result = MDLMTrainer(lm, lang.sample, config=cfg).fit()  # doctest: +ELLIPSIS
    step 2/2 | ...
    >>> result.optimizer_steps
    {'denoiser': 2}
    """

    trained_models = {"denoiser": "model"}

    def __init__(self, model: MaskedDiffusionLM, data: Tensor | Sequences, *, config: MDLMConfig | None = None,
                 judge: Any = None) -> None:
        self.use_config(config, MDLMConfig)
        if not isinstance(model, MaskedDiffusionLM):
            raise TypeError(f"`model` must be a MaskedDiffusionLM, got {type(model).__name__}")
        check_token_source(data, "data", vocab_size=model.vocab_size, length=model.length)
        if judge is not None and not callable(getattr(judge, "log_prob", None)):
            raise TypeError("`judge` must have a log_prob(seqs) method")
        self.model, self.data, self.judge = model, data, judge

    def evaluates(self) -> bool:
        return self.judge is not None

    def make_task(self) -> _MDLMTask:
        return _MDLMTask(config=self.config, model=self.model, data=self.data, judge=self.judge)


class _MDLMTask:
    """The engine task behind :class:`MDLMTrainer`."""

    def __init__(self, *, config: MDLMConfig, model: MaskedDiffusionLM, data: Tensor | Sequences,
                 judge: Any = None) -> None:
        self.c, self.model, self.data, self.judge = config, model, data, judge

    def models(self) -> dict[str, torch.nn.Module]:
        return {"denoiser": self.model}

    def optimizers(self, models: dict[str, torch.nn.Module]) -> dict[str, torch.optim.Optimizer]:
        c = self.c
        return {"denoiser": torch.optim.AdamW(models["denoiser"].parameters(), lr=c.lr, betas=c.adam_betas,
                                              weight_decay=c.weight_decay)}

    def _batch(self, ctx: StepContext) -> Tensor:
        return draw_token_batch(self.data, self.c.batch_size, ctx.cpu_generator, vocab_size=self.model.vocab_size,
                                length=self.model.length).to(ctx.device)

    def train_step(self, batch: Any, ctx: StepContext) -> Tensor:
        x0, unwrapped = self._batch(ctx), ctx.unwrap("denoiser")
        t = sample_times(x0.shape[0], generator=ctx.generator, device=ctx.device, t_min=self.c.t_min,
                         antithetic=self.c.antithetic)
        z_t = unwrapped.noise(x0, t, ctx.generator)
        log_probs = ctx.models["denoiser"](z_t, t)  # through the DDP wrapper
        return mdlm_loss(log_probs, x0, z_t, t, mask_id=unwrapped.mask_id).mean() / x0.shape[1]

    @torch.no_grad()
    def evaluate(self, ctx: StepContext) -> dict[str, Tensor]:
        model, c = ctx.unwrap("denoiser"), self.c
        x = mdlm_sample(model, c.eval_samples, model.length, mask_id=model.mask_id, nfe=c.eval_nfe,
                        generator=ctx.generator, device=ctx.device).tokens
        x0 = self._batch(ctx)
        nelbo = model.loss(x0, generator=ctx.generator, t_min=c.t_min, antithetic=c.antithetic).mean() / x0.shape[1]
        x = x.cpu()
        return {"gen_ppl": torch.tensor(generative_perplexity(x, self.judge)),
                "entropy": torch.tensor(unigram_entropy(x, model.vocab_size)), "nelbo_per_token": nelbo}
