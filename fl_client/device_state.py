"""What a device keeps between messages, in ``context.state`` and on its own
disk: its kept parameters and its method's arrays, and error feedback's
rounding residual of a compressed update (so a resumed run carries both
over)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, Message

from fedsense import protocol
from fedsense.compression import ENCODINGS, UNCOMPRESSED, encode
from fedsense.config import Config, ConfigError
from fedsense.data.clients import ClientData
from fedsense.devicestate import kept_arrays, load_local, save_local
from fedsense.methods.base import Step
from fedsense.params import Sharing
from fl_client.records import to_numpy, to_record

LOCAL_STATE = "fedsense-local"  # context.state key of the device-only arrays
RESIDUAL_STATE = "fedsense-residual"  # context.state key of error feedback's rounding residual


def state_dir(cfg: Config, data: ClientData, context: Context) -> Path | None:
    """Where this device keeps its device-only parameters between runs: the
    node config's ``state-dir``; for a simulated client, ``devices/<partition>``
    in the run directory; else nowhere (they live for one run only)."""
    given = context.node_config.get(protocol.NODE_STATE_DIR)
    if given is not None:
        path = Path(str(given)).expanduser()
        if not path.is_absolute():
            raise ConfigError(f"node config {protocol.NODE_STATE_DIR}={given!r}: must be an absolute path")
        return path
    if protocol.NODE_NUM_PARTITIONS in context.node_config and cfg.output.dir and data.partition_id >= 0:
        return Path(cfg.output.dir) / "devices" / str(data.partition_id)
    return None


def keep_local(step: Step, sharing: Sharing, context: Context, message_type: str) -> None:
    """The device's kept parameters and its method's own arrays after
    ``step`` into ``context.state`` and onto the device's disk."""
    arrays = kept_arrays(step, sharing)
    context.state[LOCAL_STATE] = to_record(arrays)
    directory = state_dir(step.cfg, step.data, context)
    if directory is not None and arrays:
        save_local(directory, step.server_round, message_type, arrays)


def packed_update(cfg: Config, msg: Message, context: Context, shared: dict[str, np.ndarray],
                   directory: Path | None) -> dict[str, ArrayRecord]:
    """The trained arrays as the server asked for them: as they are, or their
    change against the global arrays compressed (``fedsense.compression``),
    this round's rounding error kept for the next round (error feedback) in
    ``context.state`` and on the device's disk (``directory``), so a resumed
    run carries it over as well."""
    encoding = str(msg.content[protocol.CONFIG].get(protocol.CFG_UPDATE_ENCODING, UNCOMPRESSED))
    if encoding == UNCOMPRESSED:
        return {protocol.ARRAYS: to_record(shared)}
    if encoding not in ENCODINGS:
        raise ConfigError(f"the server asks for update encoding '{encoding}', which this device does not know "
                          f"(valid: {', '.join(ENCODINGS)})")
    reference = to_numpy(msg.content[protocol.ARRAYS])
    server_round = int(msg.content[protocol.CONFIG][protocol.CFG_ROUND])
    residual = None
    if RESIDUAL_STATE in context.state:
        residual = to_numpy(context.state[RESIDUAL_STATE])
    elif directory is not None:  # a resumed run: the residual of the last completed round
        residual = load_local(directory, server_round, "train", kind="residual")
    if residual is not None and (set(residual) != set(reference)
                                 or any(residual[k].shape != np.shape(reference[k]) for k in reference)):
        residual = None  # another model's residual: nothing to carry over
    packed, error = encode(shared, reference, encoding, residual if cfg.fed.error_feedback else None)
    if cfg.fed.error_feedback:
        context.state[RESIDUAL_STATE] = to_record(error)
        if directory is not None:
            save_local(directory, server_round, "train", error, kind="residual")
    return {protocol.UPDATE: to_record({protocol.UPDATE_VALUES: packed.values, protocol.UPDATE_SCALES: packed.scales})}
