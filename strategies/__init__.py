"""Flower strategies for fedsense (FedAvg extended at its narrow hooks)."""

from strategies.adaptation import AdaptationState
from strategies.fedsense_strategy import FedSenseStrategy, RoundFailed

__all__ = ["AdaptationState", "FedSenseStrategy", "RoundFailed"]
