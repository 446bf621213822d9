"""Adaptation methods, one registry entry each (``adapt.method``).

A method owns its client-side steps and its server-side state
(:class:`fedsense.methods.base.Method`); each lives in its own module here:

- ``none`` (:mod:`.source_only`): source-only FedAvg;
- ``adabn``, ``fedbn``, ``fedbn_stats`` (:mod:`.normalisation`);
- ``generated`` (:mod:`.generated`): generated BatchNorm statistics;
- ``dann``, ``m3bat``, ``m3bat_bn`` (:mod:`.adversarial`): adversarial
  alignment with federated discriminators or a statistics reference;
- ``m3bat_local`` (:mod:`.local`): calibration, self-training and
  class-conditional multi-branch alignment of device-local parameters.
"""

from fedsense.methods.adversarial import DANN, M3BAT, M3BAT_BN
from fedsense.methods.base import Method, Reply, Result, ServerState, Step
from fedsense.methods.generated import GENERATED
from fedsense.methods.local import M3BAT_LOCAL
from fedsense.methods.normalisation import ADABN, FEDBN, FEDBN_STATS
from fedsense.methods.source_only import SOURCE_ONLY
from fedsense.registry import Registry

METHODS: Registry[Method] = Registry("adaptation method")
for _method in (SOURCE_ONLY, DANN, M3BAT, FEDBN, FEDBN_STATS, ADABN, GENERATED, M3BAT_BN, M3BAT_LOCAL):
    METHODS.register(_method.name)(_method)

__all__ = ["METHODS", "Method", "Reply", "Result", "ServerState", "Step"]
