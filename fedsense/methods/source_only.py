"""``none``: source-only FedAvg. Labelled devices train; unlabeled targets
only evaluate the global model. The base :class:`Method` is this method."""

from __future__ import annotations

from fedsense.methods.base import Method


class SourceOnly(Method):
    replayable = True


SOURCE_ONLY = SourceOnly()
