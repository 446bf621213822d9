"""Flower strategies for fedsense (FedAvg extended at its narrow hooks)."""

from strategies.fedsense_strategy import FedSenseStrategy, RoundFailed

__all__ = ["FedSenseStrategy", "RoundFailed"]
