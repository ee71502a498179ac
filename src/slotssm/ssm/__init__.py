"""The time axis: selective scan (Mamba1), state-space duality (Mamba2) and the blocks built on them."""

from slotssm.ssm.kernels import available, resolve_impl
from slotssm.ssm.mamba import SSM_KINDS, Mamba, Mamba2, SSMState, build_ssm
from slotssm.ssm.scan import selective_scan, selective_scan_ref
from slotssm.ssm.ssd import ssd_scan, ssd_scan_ref

__all__ = [
    "Mamba", "Mamba2", "SSMState", "SSM_KINDS", "available", "build_ssm", "resolve_impl",
    "selective_scan", "selective_scan_ref", "ssd_scan", "ssd_scan_ref",
]
