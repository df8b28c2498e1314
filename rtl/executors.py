"""Which core runs which opcode: the machine as built (``machine(cfg)``).

Every opcode runs on one staged executor (rtl/staged.py): the cores share its scratch, its load /
store sequencer and the DMA. An opcode missing here is refused by the sequencer with BAD_OPCODE
(rtl/sequencer.py).
"""
from __future__ import annotations

from rtl.exec_add import AddCore
from rtl.exec_attn import AttnCore
from rtl.exec_lnorm import LnormCore
from rtl.exec_mat import MatCore
from rtl.exec_pool import PoolCore
from rtl.exec_rmac import RmacCore
from rtl.machine import Machine
from rtl.staged import StagedExecutor

CORES = {
    "MAT.CONV": MatCore, "MAT.LINEAR": MatCore,
    "MAT.ATTN_KV": AttnCore, "MAT.ATTN_QKV": AttnCore,
    "RMAC.DW": RmacCore, "RMAC.PW": RmacCore,
    "UNIT.ADD": AddCore, "UNIT.POOL": PoolCore, "UNIT.LNORM": LnormCore,
}


def staged(cfg) -> StagedExecutor:
    return StagedExecutor(cfg, CORES)


EXECUTORS = {opcode: staged for opcode in CORES}


def machine(cfg, **kw) -> Machine:
    return Machine(cfg, EXECUTORS, **kw)
