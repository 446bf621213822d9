"""Domain adaptation, chosen by ``adapt.method``: gradient reversal,
discriminators, the multi-branch adversarial loss, statistics references,
and schedules (pure functions of the round).

``none`` is source-only FedAvg; ``dann`` puts one discriminator on the fused
embedding; ``m3bat`` one per modality branch plus the fused one; ``fedbn``
keeps normalisation statistics on each device.
"""

from fedsense.adaptation.discriminators import FUSED
from fedsense.adaptation.methods import METHODS, Method, needs_statistics

__all__ = ["FUSED", "METHODS", "Method", "needs_statistics"]
