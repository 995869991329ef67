"""divmin.diffusion: one-step generators distilled from diffusion teachers with any f-divergence,
masked diffusion language models (MDLM: :class:`MaskedDiffusionLM`, :class:`MDLMTrainer`), and
DiDi-Instruct (:class:`DiDiTrainer`): few-step MDLM students distilled by integral-KL policy gradients.

Noise schedule (VE / EDM): x_t = x_0 + sigma eps. A teacher gives ``score(x_t, sigma)``
(and/or ``denoise``); :func:`fdistill_surrogate` turns teacher score, fake score and a
log-ratio estimate into the f-distill generator gradient E[h(r) (s_Q - s_P) dx_t/dtheta];
:class:`FDistillTrainer` trains a one-step generator with it on the shared engine.
"""

from ..engine import deprecated_aliases
from ._denoiser_teacher import DenoiserTeacher, DenoiserTrainingConfig, edm_sampler, edm_sigmas, train_denoiser
from ._didi import MaskedDiscriminator, group_normalize, integral_policy_loss, path_log_prob
from ._didi_config import DiDiConfig
from ._didi_sampler import GuidedSample, guided_sample
from ._didi_trainer import DiDiInstruct, DiDiTrainer
from ._didi_method import DiDiTrainConfig, ToyTeacherConfig  # registers `divmin train didi`
from ._config import FEATURE_SOURCES, SIGMA_SAMPLERS, TIME_WEIGHTS, FDistillConfig
from ._fdistill import FDistillTrainer
from ._mdlm import MDLMSample, MaskedDiffusionLM, mdlm_loss, mdlm_reverse_step, mdlm_sample, sample_times, subs_log_probs
from ._mdlm_nets import MDLMTransformer
from ._mdlm_trainer import MDLMConfig, MDLMTrainer
from ._nets import ConvBackbone, DenoiserGenerator, EDMDenoiser, MLPBackbone, MLPGenerator, RatioHead
from ._surrogate import check_fdistill_divergence, fdistill_surrogate, fdistill_weight
from ._teacher import DiffusionTeacher, GaussianMixtureTeacher, expand_sigma, score_from_denoiser

# the API page (members_order: __all__) lists the entry points first, internals last
__all__ = [
    "FDistillTrainer",
    "FDistillConfig",
    "DiDiTrainer",
    "DiDiConfig",
    "DiDiInstruct",
    "MDLMTrainer",
    "MDLMConfig",
    "MaskedDiffusionLM",
    "GaussianMixtureTeacher",
    "fdistill_surrogate",
    "fdistill_weight",
    "integral_policy_loss",
    "FEATURE_SOURCES",
    "SIGMA_SAMPLERS",
    "TIME_WEIGHTS",
    "ConvBackbone",
    "DenoiserGenerator",
    "DenoiserTeacher",
    "DenoiserTrainingConfig",
    "DiffusionTeacher",
    "EDMDenoiser",
    "GuidedSample",
    "MDLMSample",
    "MDLMTransformer",
    "MLPBackbone",
    "MLPGenerator",
    "MaskedDiscriminator",
    "RatioHead",
    "check_fdistill_divergence",
    "edm_sampler",
    "edm_sigmas",
    "expand_sigma",
    "group_normalize",
    "guided_sample",
    "mdlm_loss",
    "mdlm_reverse_step",
    "mdlm_sample",
    "path_log_prob",
    "sample_times",
    "score_from_denoiser",
    "subs_log_probs",
    "train_denoiser",
    "DiDiTrainConfig",
    "ToyTeacherConfig",
]

from ._method import FDistillTrainConfig, MDLMTrainConfig  # noqa: E402  (`divmin train fdistill, mdlm`: registered on import)

__all__ += ["FDistillTrainConfig", "MDLMTrainConfig"]

__getattr__ = deprecated_aliases(globals(), FDistill="FDistillTrainer")  # former name, one release
