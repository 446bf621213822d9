"""fedsense: Flower-free core of the federated multimodal sensing framework.

Nothing in this package imports ``flwr``; the Flower apps live in ``fl_client``
and ``fl_server``, strategies in ``strategies``.
"""

__version__ = "0.1.0"
