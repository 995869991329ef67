"""Alignment methods: f-DPO (preference optimisation under any admissible f)."""

from ._fdpo import FDPOOutput, fdpo_admissible, fdpo_loss

__all__ = ["FDPOOutput", "fdpo_admissible", "fdpo_loss"]
