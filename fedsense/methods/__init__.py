"""Adaptation methods, one registry entry each (``adapt.method``).

A method owns its client-side steps and its server-side state
(:class:`fedsense.methods.base.Method`). Each lives in a module of this
package, which is found and registered when the package is imported:
every module-level :class:`Method` object registers under its ``name``, so
adding a method is adding one file. Here now:

- ``none`` (:mod:`.source_only`): source-only FedAvg;
- ``adabn``, ``fedbn``, ``fedbn_stats`` (:mod:`.normalisation`);
- ``generated`` (:mod:`.generated`): generated BatchNorm statistics;
- ``dann``, ``m3bat``, ``m3bat_bn`` (:mod:`.adversarial`): adversarial
  alignment with federated discriminators or a statistics reference;
- ``m3bat_local`` (:mod:`.local`): calibration, self-training and
  class-conditional multi-branch alignment of device-local parameters.
"""

import importlib
import pkgutil

from fedsense.methods.base import Method, Reply, Result, ServerState, Step
from fedsense.registry import Registry

METHODS: Registry[Method] = Registry("adaptation method")
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    for _obj in vars(importlib.import_module(f"{__name__}.{_info.name}")).values():
        if not isinstance(_obj, Method):
            continue
        if _obj.name in METHODS:
            if METHODS[_obj.name] is not _obj:
                raise ValueError(f"two adaptation methods are named '{_obj.name}'")
            continue
        METHODS.register(_obj.name)(_obj)

__all__ = ["METHODS", "Method", "Reply", "Result", "ServerState", "Step"]
