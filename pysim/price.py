"""Price a program: cycles, utilization, DRAM traffic, latency and FPS of one frame.

Every operation is priced by its arch/cost.py function and every group by
:func:`arch.cost.group_price` (the engines side by side, band by band, against
the group's DRAM time); this module adds them up into the report's totals,
per-operation rows and per-group rows (JSON-able).
"""
from __future__ import annotations

from arch import cost
from arch.program import Program


def price(program: Program, streamed: bool = False) -> dict:
    """Totals, groups and operations of one frame of ``program`` (``streamed``: the what-if of every
    operation at its issue cycles alone, with no weight load and no fill or drain; not the RTL)."""
    cfg = program.config
    groups, ops = [], []
    for g in program.groups:
        gp = cost.group_price(cfg, program, g, streamed=streamed)
        tr = gp["traffic"]
        groups.append(dict(index=g.index, name=program.ops[g.ops[0]].node, ops=len(g.ops), bands=gp["bands"],
                           cycles=gp["cycles"], mat_busy=gp["mat_busy"], rmac_busy=gp["rmac_busy"],
                           unit_busy=gp["unit_busy"], fill=gp["fill"], dram_bytes=tr.total,
                           spill_bytes=tr.spills, dram_cycles=gp["dram_cycles"], bound=gp["bound"],
                           traffic=dict(weights=tr.weights, act_in=tr.act_in, act_out=tr.act_out,
                                        spills=tr.spills)))
        for i in g.ops:
            op = program.ops[i]
            po = gp["per_op"][i]
            held_mults = cfg.mat_multipliers if op.engine == "MAT" else cfg.rmac_multipliers
            # the op holds its engine for the stage's effective time, shared by a split node's ops
            engine_time = po["engine_cycles"] if op.engine != "UNIT" else po["unit_cycles"]
            macs = op.geom.get("macs", 0)
            ops.append(dict(index=i, node=op.node, opcode=op.opcode, engine=op.engine, group=g.index,
                            epilogue=op.epilogue, oc=[op.oc0, op.oc1], shape=_shape(op), macs=macs,
                            cycles=engine_time, engine_cycles=po["engine_cycles"], unit_cycles=po["unit_cycles"],
                            utilization=macs / (engine_time * held_mults) if macs and engine_time else 0.0,
                            dram_bytes=tr.per_op.get(i, 0),
                            dram_cycles=tr.per_op.get(i, 0) / cfg.dram_bytes_per_cycle,
                            bound="memory" if tr.per_op.get(i, 0) / cfg.dram_bytes_per_cycle > engine_time
                            else "compute"))
    return _totals(program, groups, ops)


def _shape(op) -> str:
    g = op.geom
    if op.opcode in ("MAT.ATTN_KV", "MAT.ATTN_QKV"):
        return f"{g['heads']}h x {g['h'] * g['w']}tok x d{g['dim']}"
    if op.opcode == "MAT.LINEAR":
        return f"{g['cin']}->{op.channels}"
    if op.engine == "UNIT":
        return f"{op.channels}x{g['oh']}x{g['ow']}"
    gr = f" g{g['groups']}" if g["groups"] > 1 and op.opcode != "RMAC.DW" else ""
    return f"{g['cin']}->{op.channels} {g['k']}x{g['k']}/s{g['stride']} @{g['oh']}x{g['ow']}{gr}"


def _totals(program: Program, groups: list, ops: list) -> dict:
    cfg = program.config
    macs = program.macs
    cycles = sum(g["cycles"] for g in groups)
    secs = cycles / (cfg.clock_mhz * 1e6)
    dram = sum(g["dram_bytes"] for g in groups)
    gops = 2 * macs / secs / 1e9
    mem_cycles = sum(g["cycles"] for g in groups if g["bound"] == "memory")
    return {
        "model": program.model,
        "resolution": program.resolution,
        "config": cfg.to_dict(),
        "total_macs": macs,
        "cycles": cycles,
        "latency_ms": secs * 1e3,
        "fps": 1.0 / secs,
        "gops": gops,
        "peak_gops": cfg.peak_gops,
        "dram_gbps": cfg.dram_gbps,
        "mac_utilization": macs / (cycles * cfg.multipliers),
        "multipliers": cfg.multipliers,
        "dsps": cfg.dsps,
        "gops_per_dsp": gops / cfg.dsps,
        "dram_bytes": dram,
        "dram_mb_per_frame": dram / 1e6,
        "dram_breakdown": {k: sum(g["traffic"][k] for g in groups) for k in ("weights", "act_in", "act_out", "spills")},
        "memory_bound_cycle_fraction": mem_cycles / cycles,
        "bound": "memory" if mem_cycles * 2 > cycles else "compute",
        "fill_cycles": sum(g["fill"] for g in groups),
        "mat_busy": sum(g["mat_busy"] for g in groups),
        "rmac_busy": sum(g["rmac_busy"] for g in groups),
        "operations": len(ops),
        "groups": groups,
        "ops": ops,
    }
