"""Cocotb side of the testbenches: clock/reset, stream drivers, bit-exact compare, cycle records.

Runs inside the simulator process (imported by the ``tb/*_cocotb.py`` modules
that ``tb.harness.run_cocotb`` launches). Streams follow amaranth.lib.stream:
a port ``<name>`` of a component becomes ``<name>__valid``, ``<name>__ready``
and ``<name>__payload`` in the Verilog, the payload one packed vector laid out
by an Amaranth ``data`` layout (first field / element at bit 0); ``pack`` and
``unpack`` convert through the same layout objects rtl/ uses, so the
testbench cannot disagree with the hardware about bit positions.
"""
from __future__ import annotations

import json
import os
import random
from collections import deque
from pathlib import Path

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge


# --- case parameters (written by tb.harness.run_cocotb) --------------------------

def load_case() -> tuple[dict, dict]:
    """Return (params, arrays) of the case this simulation runs."""
    d = os.environ.get("TB_CASE_DIR")
    if not d:
        raise RuntimeError("TB_CASE_DIR is not set: launch cocotb modules through tb.harness.run_cocotb")
    d = Path(d)
    params = json.loads((d / "params.json").read_text())
    arrays = {}
    if (d / "arrays.npz").is_file():
        with np.load(d / "arrays.npz") as z:
            arrays = {k: z[k] for k in z.files}
    return params, arrays


def write_result(result: dict) -> None:
    """Hand a small JSON-able dict back to the pytest side (run_cocotb's return value)."""
    d = Path(os.environ["TB_CASE_DIR"])
    (d / "result.json").write_text(json.dumps(result, indent=1, sort_keys=True, default=int))


# --- payload packing through Amaranth layouts ------------------------------------

def _shape_info(shape):
    from amaranth.hdl import Shape
    from amaranth.lib import data
    if isinstance(shape, data.Layout):
        return shape
    s = Shape.cast(shape)
    return s


def pack(shape, value) -> int:
    """Pack ``value`` (int, list/ndarray for ArrayLayout, dict for StructLayout) into an int."""
    from amaranth.lib import data
    shape = _shape_info(shape)
    if isinstance(shape, data.ArrayLayout):
        w = data.Layout.cast(shape.elem_shape).size if isinstance(shape.elem_shape, data.Layout) \
            else _shape_info(shape.elem_shape).width
        vals = list(np.asarray(value).reshape(-1).tolist()) if not isinstance(value, (list, tuple)) else list(value)
        if len(vals) != shape.length:
            raise ValueError(f"array payload needs {shape.length} elements, got {len(vals)}")
        out = 0
        for i, v in enumerate(vals):
            out |= pack(shape.elem_shape, v) << (i * w)
        return out
    if isinstance(shape, data.StructLayout):
        out = 0
        for name, field in shape:
            if name not in value:
                raise ValueError(f"struct payload is missing field {name!r}")
            out |= pack(field.shape, value[name]) << field.offset
        return out
    v = int(value)
    lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed else (0, (1 << shape.width) - 1)
    if not lo <= v <= hi:
        raise ValueError(f"value {v} does not fit {'signed' if shape.signed else 'unsigned'}({shape.width})")
    return v & ((1 << shape.width) - 1)


def unpack(shape, raw: int):
    """Inverse of pack: int -> int / list / dict following the layout."""
    from amaranth.lib import data
    shape = _shape_info(shape)
    if isinstance(shape, data.ArrayLayout):
        es = shape.elem_shape
        w = data.Layout.cast(es).size if isinstance(es, data.Layout) else _shape_info(es).width
        return [unpack(es, (raw >> (i * w)) & ((1 << w) - 1)) for i in range(shape.length)]
    if isinstance(shape, data.StructLayout):
        return {name: unpack(f.shape, (raw >> f.offset) & ((1 << f.width) - 1)) for name, f in shape}
    v = raw & ((1 << shape.width) - 1)
    if shape.signed and v >> (shape.width - 1):
        v -= 1 << shape.width
    return v


# --- testbench ----------------------------------------------------------------------

class TB:
    """Owns clock, reset, a free-running cycle counter and the stream drivers of one DUT.

    ``gap`` / ``backpressure`` are probabilities per cycle (0 = none); every
    random choice comes from one ``random.Random(seed)`` so runs repeat.
    """

    def __init__(self, dut, seed: int = 1, period_ns: int = 10, clk: str = "clk", rst: str = "rst"):
        self.dut = dut
        self.clk = getattr(dut, clk)
        self.rst = getattr(dut, rst)
        self.rng = random.Random(seed)
        self.period_ns = period_ns
        self.cycle = 0
        Clock(self.clk, period_ns, unit="ns").start()
        cocotb.start_soon(self._count())

    async def _count(self):
        while True:
            await RisingEdge(self.clk)
            self.cycle += 1

    async def reset(self, cycles: int = 3):
        self.rst.value = 1
        for _ in range(cycles):
            await RisingEdge(self.clk)
        self.rst.value = 0
        await RisingEdge(self.clk)

    async def cycles(self, n: int):
        for _ in range(n):
            await RisingEdge(self.clk)

    def source(self, name: str, shape, gap: float = 0.0) -> "StreamSource":
        return StreamSource(self, name, shape, gap)

    def sink(self, name: str, shape, backpressure: float = 0.0) -> "StreamSink":
        return StreamSink(self, name, shape, backpressure)


class StreamSource:
    """Drives ``<name>__valid/__payload`` from a queue, honouring ``<name>__ready``.

    ``fire_cycles`` holds the cycle number of every accepted beat.
    """

    def __init__(self, tb: TB, name: str, shape, gap: float = 0.0):
        self.tb, self.name, self.shape, self.gap = tb, name, shape, gap
        self.valid = getattr(tb.dut, f"{name}__valid")
        self.ready = getattr(tb.dut, f"{name}__ready")
        self.payload = getattr(tb.dut, f"{name}__payload")
        self.queue: deque = deque()
        self.fire_cycles: list[int] = []
        self.valid.value = 0
        cocotb.start_soon(self._run())

    def send(self, value) -> None:
        self.queue.append(pack(self.shape, value))

    def send_raw(self, raw: int) -> None:
        self.queue.append(raw)

    @property
    def idle(self) -> bool:
        return not self.queue

    async def _run(self):
        clk = self.tb.clk
        while True:
            if self.queue and not (self.gap and self.tb.rng.random() < self.gap):
                self.valid.value = 1
                self.payload.value = self.queue[0]
                await ReadOnly()
                fire = bool(self.ready.value)
                if fire:  # cycle number read before the edge, as the sink does
                    self.fire_cycles.append(self.tb.cycle)
                await RisingEdge(clk)
                if fire:
                    self.queue.popleft()
            else:
                self.valid.value = 0
                await RisingEdge(clk)

    async def wait_idle(self):
        while self.queue:
            await RisingEdge(self.tb.clk)


class StreamSink:
    """Collects ``<name>__payload`` beats, applying random backpressure on ``__ready``."""

    def __init__(self, tb: TB, name: str, shape, backpressure: float = 0.0):
        self.tb, self.name, self.shape, self.backpressure = tb, name, shape, backpressure
        self.valid = getattr(tb.dut, f"{name}__valid")
        self.ready = getattr(tb.dut, f"{name}__ready")
        self.payload = getattr(tb.dut, f"{name}__payload")
        self.beats: list = []
        self.fire_cycles: list[int] = []
        self.ready.value = 0
        cocotb.start_soon(self._run())

    async def _run(self):
        clk = self.tb.clk
        while True:
            rdy = not (self.backpressure and self.tb.rng.random() < self.backpressure)
            self.ready.value = int(rdy)
            await ReadOnly()
            if rdy and self.valid.value:
                self.beats.append(unpack(self.shape, int(self.payload.value)))
                self.fire_cycles.append(self.tb.cycle)
            await RisingEdge(clk)

    async def wait_beats(self, n: int, timeout_cycles: int = 1_000_000):
        start = self.tb.cycle
        while len(self.beats) < n:
            if self.tb.cycle - start > timeout_cycles:
                raise TimeoutError(f"stream {self.name}: got {len(self.beats)} of {n} beats "
                                   f"after {timeout_cycles} cycles")
            await RisingEdge(self.tb.clk)


# --- checks and records ---------------------------------------------------------------

def assert_equal(actual, expected, what: str, max_report: int = 10) -> None:
    """Bit-exact comparison of every element; the report names ``what`` (layer/case),
    the index, the expected and the actual value of the first mismatches."""
    a = np.asarray(actual)
    e = np.asarray(expected)
    if a.shape != e.shape:
        raise AssertionError(f"MISMATCH {what}: shape {a.shape} != expected {e.shape}")
    bad = np.argwhere(a != e)
    if len(bad):
        lines = [f"MISMATCH {what}: {len(bad)} of {e.size} elements differ"]
        for idx in bad[:max_report]:
            t = tuple(int(i) for i in idx)
            lines.append(f"MISMATCH {what} index {t}: expected {int(e[t])}, actual {int(a[t])}")
        for l in lines:
            cocotb.log.error(l)
        raise AssertionError("\n".join(lines))


def record_cycles(params: dict, op: dict, cycles: int, ideal_cycles: int, case: str | None = None,
                  extra: dict | None = None) -> Path:
    """Write build/tb/cycles/<unit>/<case>.json: the cycles one operation took (no stalls)."""
    unit = params["unit"]
    case = case or params["case"]
    d = Path(params["cycles_dir"]) / unit
    d.mkdir(parents=True, exist_ok=True)
    rec = {"unit": unit, "config": params["config"], "op": op, "cycles": int(cycles),
           "ideal_cycles": int(ideal_cycles)}
    if extra:
        rec.update(extra)
    path = d / f"{case}.json"
    path.write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    return path


# --- AXI memory models (cocotbext-axi) ----------------------------------------------------------

def pause_generator(rng: random.Random, prob: float):
    """An endless pause pattern for cocotbext-axi's ``set_pause_generator``: pause with ``prob``."""
    rng = random.Random(rng.random())
    while True:
        yield rng.random() < prob


def add_read_latency(ram, clk, rng: random.Random, lo: int, hi: int) -> None:
    """Delay every AR an ``AxiRam`` takes by ``lo..hi`` cycles of ``clk`` before its data returns."""
    from cocotb.triggers import ClockCycles
    ar = ram.read_if.ar_channel
    orig = ar.recv
    rng = random.Random(rng.random())

    async def recv():
        t = await orig()
        n = rng.randint(lo, hi)
        if n:
            await ClockCycles(clk, n)
        return t

    ar.recv = recv
