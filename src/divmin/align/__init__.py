"""Alignment methods: f-DPO (preference optimisation under any admissible f)."""

from ._fdpo import FDPOOutput, fdpo_admissible, fdpo_loss
from ._fdpo_trainer import FDPOConfig, FDPOTrainer
from ._logps import sequence_logps
from ._preference_data import PreferenceCollator, load_preference_rows, tokenize_preferences

__all__ = [
    "FDPOConfig",
    "FDPOOutput",
    "FDPOTrainer",
    "PreferenceCollator",
    "fdpo_admissible",
    "fdpo_loss",
    "load_preference_rows",
    "sequence_logps",
    "tokenize_preferences",
]
