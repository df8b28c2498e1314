"""Cocotb side shared by the normalization-unit testbenches (tb/test_requant.py & co.).

A case (see ``tb.norm_cases``) names the component (``factory`` = ``"module:Class"``
plus JSON ``kwargs``), the static configuration ports, the parameter-table
beats, the input beats per stream and the expected output beats. The
component is re-created here only to read its payload layouts, so packing
follows exactly the layouts rtl/ uses. Output beats are compared bit-exactly,
field by field, every element; cycles of a stall-free run are recorded.
"""
from __future__ import annotations

import dataclasses
import importlib

import numpy as np

import cocotb
from cocotb.triggers import RisingEdge

from tb.cocotb_kit import TB, assert_equal, load_case, record_cycles, write_result


def decode_kwargs(kwargs: dict) -> dict:
    """JSON kwargs -> constructor kwargs: ``["signed"|"unsigned", w]`` becomes a Shape."""
    from amaranth import signed, unsigned
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, list) and len(v) == 2 and v[0] in ("signed", "unsigned"):
            v = (signed if v[0] == "signed" else unsigned)(v[1])
        out[k] = v
    return out


def make_component(params: dict):
    from arch.config import AccelConfig
    names = {f.name for f in dataclasses.fields(AccelConfig)}
    cfg = AccelConfig(**{k: v for k, v in params["config"].items() if k in names})
    mod, cls = params["factory"].split(":")
    return getattr(importlib.import_module(mod), cls)(cfg, **decode_kwargs(params.get("kwargs", {})))


def _dont_care(expected, actual):
    """Expected ``None`` entries (padding lanes) take the actual value: not compared."""
    if isinstance(expected, list):
        return [a if e is None else e for e, a in zip(expected, actual)]
    return actual if expected is None else expected


def layout_of(comp, port: str):
    return getattr(comp, port).payload.shape()


@cocotb.test()
async def stream_unit(dut):
    p, _ = load_case()
    comp = make_component(p)
    tb = TB(dut, seed=p["seed"])
    for name, val in p.get("ports", {}).items():
        getattr(dut, name).value = int(val) & ((1 << len(getattr(dut, name))) - 1)
    await tb.reset()

    # Parameter tables first (always-ready write ports), then the data streams.
    for port, beats in p.get("prm", {}).items():
        src = tb.source(port, layout_of(comp, port))
        for b in beats:
            src.send(b)
        await src.wait_idle()
        await tb.cycles(2)

    gap, bp = p.get("gap", 0.0), p.get("backpressure", 0.0)
    sinks = {port: tb.sink(port, layout_of(comp, port), backpressure=bp) for port in p["expected"]}
    sources = {}
    for port, beats in p["inputs"].items():
        sources[port] = src = tb.source(port, layout_of(comp, port), gap=gap)
        for b in beats:
            src.send(b)
    for port, exp in p["expected"].items():
        await sinks[port].wait_beats(len(exp), timeout_cycles=50 * (len(exp) + 100))
    await tb.cycles(p.get("drain_cycles", 20))  # nothing extra may come out

    for port, exp in p["expected"].items():
        got = sinks[port].beats
        assert_equal(np.array([len(got)]), np.array([len(exp)]), f"{p['case']} {port} beat count")
        G = p.get("row_groups")
        for field in exp[0]:
            actual = [g[field] for g in got]
            wanted = np.array([_dont_care(e[field], a) for e, a in zip(exp, actual)])
            actual = np.array(actual)
            if G and actual.ndim == 2 and len(actual) % G == 0:
                # (beat, lane) -> (row, channel): the report then names the tensor element
                actual, wanted = actual.reshape(-1, G * actual.shape[1]), wanted.reshape(-1, G * actual.shape[1])
            assert_equal(actual, wanted, f"{p['case']} {port}.{field}" + (" [row, channel]" if G else ""))

    first_in = min(s.fire_cycles[0] for s in sources.values())
    last_out = max(s.fire_cycles[-1] for s in sinks.values())
    cycles = last_out - first_in + 1
    res = {"cycles": cycles, "beats_in": {k: len(v) for k, v in p["inputs"].items()},
           "beats_out": {k: len(v) for k, v in p["expected"].items()}}
    if p.get("return_outputs"):
        res["outputs"] = {port: s.beats for port, s in sinks.items()}
    if gap == 0 and bp == 0 and p.get("op"):
        op = p["op"]
        record_cycles(p, op, cycles, ideal_cycles=op["ideal_cycles"],
                      extra={"latency": op.get("latency"), "beats_in": res["beats_in"]})
    write_result(res)
