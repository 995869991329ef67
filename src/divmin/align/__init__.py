"""Alignment methods: f-DPO (preference optimisation under any admissible f) and f-DPG
(distributional policy gradient toward an energy-based target under any f)."""

from ..estimators import LogZEstimator, MovingBaseline  # moved to divmin.estimators; kept here for compatibility
from ..lm import sequence_logps  # re-exported: it moved to divmin.lm
from ._bandit import (bandit_metrics, fdpo_optimum, implied_rewards, optimum_sample_size, pair_fisher, pair_weights,
                      population_fdpo_loss)
from ._fdpg import FDPGOutput, fdpg_loss
from ._fdpg_trainer import FDPGConfig, FDPGTrainer
from ._fdpo import FDPOOutput, fdpo_admissible, fdpo_loss
from ._fdpo_trainer import FDPOConfig, FDPOTrainer
from ._preference_data import PreferenceCollator, load_preference_rows, tokenize_preferences
from ._text_scorers import vader_sentiment
from ._targets import (DistributionalConstraint, EnergyTarget, MomentFit, PointwiseConstraint, RewardTilt,
                       fit_moments)

# the API page (members_order: __all__) lists the entry points first, internals last
__all__ = [
    "fdpo_loss",
    "FDPOTrainer",
    "FDPOConfig",
    "fdpg_loss",
    "FDPGTrainer",
    "FDPGConfig",
    "EnergyTarget",
    "PointwiseConstraint",
    "DistributionalConstraint",
    "RewardTilt",
    "fdpo_admissible",
    "fdpo_optimum",
    "FDPGOutput",
    "FDPOOutput",
    "LogZEstimator",
    "MomentFit",
    "MovingBaseline",
    "PreferenceCollator",
    "bandit_metrics",
    "fit_moments",
    "implied_rewards",
    "load_preference_rows",
    "optimum_sample_size",
    "pair_fisher",
    "pair_weights",
    "population_fdpo_loss",
    "sequence_logps",
    "tokenize_preferences",
    "vader_sentiment",
]

from ._method import FDPGTrainConfig, FDPOTrainConfig  # noqa: E402  (`divmin train fdpo, fdpg`: registered on import)

__all__ += ["FDPGTrainConfig", "FDPOTrainConfig"]
