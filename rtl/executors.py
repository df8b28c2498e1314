"""Which executor runs which opcode: the machine as built (``machine(cfg)``).

An opcode missing here is refused by the sequencer with BAD_OPCODE (rtl/sequencer.py).
"""
from __future__ import annotations

from rtl.exec_add import add_executor
from rtl.exec_attn import attn_executor
from rtl.exec_lnorm import lnorm_executor
from rtl.exec_mat import mat_executor
from rtl.exec_pool import pool_executor
from rtl.exec_rmac import rmac_executor
from rtl.machine import Machine

EXECUTORS = {
    "UNIT.ADD": add_executor,
    "UNIT.POOL": pool_executor,
    "UNIT.LNORM": lnorm_executor,
    "RMAC.DW": rmac_executor,
    "RMAC.PW": rmac_executor,
    "MAT.CONV": mat_executor,
    "MAT.LINEAR": mat_executor,
    "MAT.ATTN_KV": attn_executor,
    "MAT.ATTN_QKV": attn_executor,
}


def machine(cfg, **kw) -> Machine:
    return Machine(cfg, EXECUTORS, **kw)
