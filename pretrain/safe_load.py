"""Reading checkpoint files without running what they pickled: `torch.load(weights_only=True)` with an
explicit allowlist of the few non-tensor classes DeepSpeed's shards and our RNG states hold.

A checkpoint someone shared (to export or resume) is then data, never code. A file holding any other
class is refused with the class named.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data_pipeline.errors import UserError


def allowed() -> list:
    """DeepSpeed's optimizer shards: the ZeRO stage (an enum), the loss scaler's state, and the fragment
    addresses of ZeRO-1/2's flat partitions. The RNG states: numpy's MT19937 state array (ndarray, its dtype).
    (DeepSpeed is imported here, on first load, so that importing the checkpoint code stays cheap.)"""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address, np.ndarray, np.dtype,
            np._core.multiarray._reconstruct, type(np.dtype(np.uint32))]


def load(path: Path, **kwargs):
    """torch.load of `path` with only tensors, containers, and the `allowed()` classes."""
    try:
        with torch.serialization.safe_globals(allowed()):
            return torch.load(path, map_location="cpu", weights_only=True, **kwargs)
    except torch.serialization.pickle.UnpicklingError as exc:
        raise UserError(f"{path} holds something other than tensors and the DeepSpeed state Graft reads "
                        f"({str(exc).splitlines()[-1][:200]}); it was not written by a Graft run, or was "
                        "altered: it is not loaded") from None
