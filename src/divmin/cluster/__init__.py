"""divmin.cluster: DEPICT deep clustering by divergence minimisation (Ghasedi Dizaji et al. 2017).

A softmax clustering head (or DEC's Student-t head, ``HEADS``) on a convolutional autoencoder's embedding is trained to
minimise D(P || Q) between an auxiliary target P (rule ``"paper"`` or ``"dec"``,
Xie et al. 2016) and its soft assignments Q, with any registry divergence, plus
a layer-wise reconstruction loss; targets and network are updated alternately.
"""

from ._nets import HEADS, PATHS, DepictNet
from ._objective import TARGET_RULES, auxiliary_target, depict_loss
from ._trainer import DepictConfig, DepictTrainer, kmeans_init_head
from ._method import DEPICTTrainConfig  # registers `divmin train depict`

# the API page (members_order: __all__) lists the entry points first, internals last
__all__ = ["DepictTrainer", "DepictConfig", "depict_loss", "DepictNet", "HEADS", "PATHS", "TARGET_RULES",
           "auxiliary_target", "kmeans_init_head", "DEPICTTrainConfig"]
