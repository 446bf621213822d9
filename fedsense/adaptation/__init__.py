"""Domain adaptation methods, chosen by ``adapt.method``.

Each method says which labels a client may train on and which parameters
stay on the device. ``none`` is source-only FedAvg: target clients have no
labels to learn from, so they take part in evaluation only.
"""

from fedsense.adaptation.methods import METHODS, Method

__all__ = ["METHODS", "Method"]
