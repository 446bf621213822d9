"""Domain adaptation building blocks: gradient reversal, discriminators, the
multi-branch adversarial loss, statistics references, input calibration,
self-training, class-conditional alignment and schedules (pure functions of
the round). The methods that combine them are in :mod:`fedsense.methods`.
"""

from fedsense.adaptation.discriminators import FUSED

__all__ = ["FUSED"]
