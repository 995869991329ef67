"""The energy view of robust classifiers (Mirza et al. 2024, WEAT), adversarial training and SGLD.

``energy`` / ``joint_energy`` read a classifier as an energy-based model (JEM,
Grathwohl et al. 2020); ``pgd_attack`` (Madry et al. 2018) and ``trades_attack``
(Zhang et al. 2019) are the inner maximisations; ``robust_loss`` holds the
objectives ``standard``, ``pgd-at``, ``trades`` and ``weat`` (TRADES' and WEAT's
divergence term is any registry member, D(p(x) ‖ p(x')));
``RobustTrainer`` trains them on the engine (settings: ``WEATConfig``); ``sgld_sample`` generates by SGLD on
E(x, y) from class-wise Gaussian or PCA starts (``SGLD_INITS``); ``autoattack_accuracy``
runs AutoAttack through the optional torchattacks package.
"""

from ..engine import deprecated_aliases
from ._attacks import ATTACK_STARTS, NORMS, pgd_attack, trades_attack
from ._autoattack import autoattack_accuracy, autoattack_available
from ._energy import check_labels, energy, joint_energy, kl_energy_terms, weat_weights
from ._method import WEATTrainConfig  # registers `divmin train weat`
from ._evaluate import robustness_metrics
from ._objectives import OBJECTIVES, AttackSettings, available_objectives, register_objective, robust_loss
from ._sgld import SGLD_INITS, class_gaussian_init, class_pca_init, sgld_sample
from ._trainer import RobustTrainer, WEATConfig

# the API page (members_order: __all__) lists the entry points first, internals last
__all__ = [
    "RobustTrainer",
    "WEATConfig",
    "robust_loss",
    "robustness_metrics",
    "weat_weights",
    "pgd_attack",
    "trades_attack",
    "sgld_sample",
    "energy",
    "joint_energy",
    "kl_energy_terms",
    "NORMS",
    "ATTACK_STARTS",
    "OBJECTIVES",
    "AttackSettings",
    "SGLD_INITS",
    "autoattack_accuracy",
    "autoattack_available",
    "available_objectives",
    "check_labels",
    "class_gaussian_init",
    "class_pca_init",
    "register_objective",
    "WEATTrainConfig",
]

__getattr__ = deprecated_aliases(globals(), RobustConfig="WEATConfig")  # former name, one release
