"""The attention executors (MAT.ATTN_KV, MAT.ATTN_QKV: rtl/exec_attn.py), bit-exact against golden/.

* ``@sim``: every attention operation of the test network replayed on the machine under Verilator
  (tb/test_executors.py ``replay_failures``), both halves on the one executor.
* fast: the compute cores alone in Amaranth's simulator on a scratch laid out as rtl/staged.py lays
  it out, filled from golden's DRAM state before the operation (the regions the output slices come
  from compared with golden's state after it), and a record patched past the MAT engine's weight
  buffer, which the core refuses with BAD_GEOMETRY.
"""
from __future__ import annotations

import dataclasses
import functools
import struct

import numpy as np
import pytest
from amaranth import Elaboratable, Module, Signal
from amaranth.lib import data, memory
from amaranth.sim import Simulator

from arch import encoding
from arch.config import PRESETS
from arch import formats
from arch.program import ALIGN, Group, Op, Tensor, param_tables
from arch.regmap import ErrorCode
from rtl.exec_attn import AttnCore
from rtl.staged import core_write, regions, scratch_depth
from tb import replay
from tb.test_executors import replay_failures

CFG = PRESETS["tiny"]


def _align(v: int) -> int:
    return -(-v // ALIGN) * ALIGN


@functools.cache
def _network():
    from tests.test_golden_model import images, tiny_ir
    prog, _, image = replay.dram_program(tiny_ir(), CFG)
    return prog, replay.golden_states(prog, image, images(1)[0])


def network_case(k: int):
    """Operation ``k`` of the test network: (program, op, DRAM before, DRAM after)."""
    prog, states = _network()
    return prog, prog.ops[k], states[k], states[k + 1]


def synthetic_case(cfg, opcode: str, heads: int, dim: int, h: int, w: int, out_offset: int = 0, seed: int = 1,
                   frac: int = 0):
    """An attention half of any shape on random codes and parameters (golden/SPEC.md section 5
    ranges), alone in a small DRAM image: (program, op, DRAM before, DRAM after by golden/)."""
    from golden import execute, program as gp
    from golden.vectors import Recorder
    rng = np.random.default_rng(seed)
    base, _ = _network()
    F = formats.formats(cfg)
    kv_half = opcode == "MAT.ATTN_KV"
    HD = heads * dim
    shapes = {"s.qkv": ((3 * HD, h, w), False)}
    if kv_half:
        shapes.update({"s.kv": ((heads, dim, dim), True), "s.ks": ((heads, dim), False)})
        ins, outs = ["s.qkv"], ["s.kv", "s.ks"]
    else:
        shapes.update({"s.kv": ((heads, dim, dim), True), "s.ks": ((heads, dim), False),
                       "s.out": ((out_offset + HD + 1, h, w), False)})
        ins, outs = ["s.qkv", "s.kv", "s.ks"], ["s.out"]
    tensors, addr = dict(base.tensors), 0
    for name, (shape, signed) in shapes.items():
        tensors[name] = Tensor(name, shape, 8, signed, "dram", addr, int(np.prod(shape)))
        addr = _align(addr + int(np.prod(shape)))
    epi = "kv" if kv_half else "divide"
    geom = dict(cin=3 * HD, cout=HD, h=h, w=w, oh=h, ow=w, heads=heads, dim=dim, kv_bits=8, code_bits=4,
                out_offset=0 if kv_half else out_offset, **({"div_frac": frac} if frac else {}))
    op = Op(0, opcode, "s", 0, ins, outs, epi, 0, HD, geom, *((-127, 127) if kv_half else (0, 255)))
    values = dict(z_k=[rng.integers(60, 140)], z_v=[rng.integers(60, 140)], M_kv=rng.integers(1 << 30, 1 << 31, HD),
                  n_kv=rng.integers(38, 44, HD), M_ks=rng.integers(1 << 30, 1 << 31, heads),
                  n_ks=rng.integers(33, 37, heads), z_q=[rng.integers(60, 140)],
                  M_o=rng.integers(1 << 30, 1 << 31, HD), n_o=rng.integers(26, 30, HD), e_lo=[8],
                  z_out=[rng.integers(100, 150)], M_o1=rng.integers(1 << 30, 1 << 31, HD),
                  n_o1=rng.integers(26, 30, HD))
    for prm in param_tables(op, cfg):
        op.params.append(dataclasses.replace(prm, addr=addr))
        addr = _align(addr + prm.bytes)
    before = np.zeros(addr, np.uint8)

    def put(name, v, fmt):
        a = tensors[name].addr if name in tensors else op.param(name).addr
        raw = fmt.pack(np.asarray(v, np.int64).reshape(-1), name)
        before[a:a + raw.size] = raw
    for name, (shape, signed) in shapes.items():
        lo, hi = (-127, 128) if signed else (0, 256)
        put(name, rng.integers(lo, hi, shape), formats.tensor_format(8, signed))
    for prm in op.params:
        put(prm.name, values[prm.name], getattr(F, prm.fmt))
    after = before.copy()
    p = {prm.name: np.asarray(values[prm.name], np.int64) for prm in op.params}
    node = gp._attention_node(op, p)
    qkv = _read(before, tensors["s.qkv"])[None]
    rec, st = Recorder(layers=()), execute.Stats()
    if kv_half:
        res = execute.attention_kv_half(node, qkv, rec, st)
        for name, v in zip(outs, res):
            _write(after, tensors[name], v[0])
    else:
        o = execute.attention_qkv_half(node, qkv, _read(before, tensors["s.kv"])[None],
                                       _read(before, tensors["s.ks"])[None], rec, st)[0]
        full = _read(before, tensors["s.out"])
        full[out_offset:out_offset + HD] = o
        _write(after, tensors["s.out"], full)
    prog = dataclasses.replace(base, config=cfg, tensors=tensors, ops=[op], groups=[Group(0, [0], 1)])
    return prog, op, before, after


def _read(mem, t):
    n = int(np.prod(t.shape))
    return formats.tensor_format(t.bits, t.signed).unpack(mem[t.addr:t.addr + n], n).reshape(t.shape)


def _write(mem, t, v):
    raw = formats.tensor_format(t.bits, t.signed).pack(np.asarray(v, np.int64).reshape(-1), t.name)
    mem[t.addr:t.addr + raw.size] = raw


class _Harness(Elaboratable):
    """A core on a scratch of bus-word rows as rtl/staged.py gives it: read data the cycle after the
    address (the byte on ``rdata``, its row on ``rword``), byte writes."""

    def __init__(self, core, init):
        self.core, self.init = core, init

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        B = core.word_bytes
        lb = B.bit_length() - 1
        rows = [[int(v) for v in self.init[r:r + B]] for r in range(0, len(self.init), B)]
        m.submodules.scratch = mem = memory.Memory(shape=data.ArrayLayout(8, B), depth=len(rows), init=rows)
        rp, wp = mem.read_port(), mem.write_port(granularity=1)
        lane = Signal(lb)
        m.d.sync += lane.eq(core.raddr[:lb])
        wdata, wen = core_write(B, core.waddr, core.wdata, core.wen, core.wrow, core.wmask)
        m.d.comb += [rp.addr.eq(core.raddr >> lb), core.rdata.eq(rp.data.as_value().word_select(lane, 8)),
                     core.rword.eq(rp.data.as_value()),
                     wp.addr.eq(core.waddr >> lb), wp.data.eq(wdata), wp.en.eq(wen)]
        self.mem = mem
        return m

    def byte(self, ctx, addr: int) -> int:
        B = self.core.word_bytes
        return ctx.get(self.mem.data[addr // B][addr % B])


def run_core(core_cls, case, cfg=CFG, patch_record=None, max_cycles: int = 200_000):
    """Run ``case`` = (program, op, DRAM before, DRAM after) on ``core_cls`` alone (its record
    through ``patch_record(bytearray)`` if given): (error code or None, cycles, list of (output
    index, expected bytes, got bytes)) of the slices rtl/staged.py stores."""
    prog, op, before, after = case
    r = regions(prog, op)
    ins, p_off, outs = r["inputs"], r["params"], r["outputs"]
    init = np.zeros(scratch_depth(cfg), np.uint8)
    if op.weight_bytes:
        init[r["weights"]:r["weights"] + op.weight_bytes] = before[op.weights:op.weights + op.weight_bytes]
    for off, t in zip(ins, op.inputs):
        tt = prog.tensors[t]
        init[off:off + tt.bytes] = before[tt.addr:tt.addr + tt.bytes]
    if op.params:
        a = op.params[0].addr
        init[p_off:p_off + op.param_span] = before[a:a + op.param_span]
    one = dataclasses.replace(prog, ops=[dataclasses.replace(op, index=0, group=0)],
                              groups=[Group(0, [0], 1)])
    rec = bytearray(encoding.encode(one)[encoding.HEADER_BYTES:][:encoding.RECORD_BYTES])
    if patch_record:
        patch_record(rec)
    core = core_cls(cfg)
    h = _Harness(core, [int(v) for v in init])
    sim = Simulator(h)
    sim.add_clock(1e-8)
    spans = []
    for off, t in zip(outs, op.outputs):
        tt = prog.tensors[t]
        # the slice rtl/staged.py stores: the operation's channels (ATTN_KV: both outputs whole)
        unit = tt.bytes // tt.shape[0]
        lo, hi = op.oc0 * unit, op.oc1 * unit
        if op.opcode == "MAT.ATTN_QKV":
            lo, hi = (op.geom["out_offset"] + op.oc0) * unit, (op.geom["out_offset"] + op.oc1) * unit
        elif op.opcode == "MAT.ATTN_KV":
            lo, hi = 0, tt.bytes
        spans.append((off, tt.addr, lo, hi))
    result = {}

    async def bench(ctx):
        ctx.set(core.record, int.from_bytes(rec, "little"))
        for i, v in enumerate(ins):
            ctx.set(core.in_off[i], v)
        ctx.set(core.p_off, p_off)
        ctx.set(core.w_off, r["weights"])
        ctx.set(core.free_off, r["free"])
        for i, v in enumerate(outs):
            ctx.set(core.out_off[i], v)
        ctx.set(core.go, 1)
        await ctx.tick()
        ctx.set(core.go, 0)
        for cyc in range(max_cycles):
            if ctx.get(core.error):
                result.update(error=ErrorCode(ctx.get(core.error_code)), cycles=cyc)
                return
            if ctx.get(core.done):
                await ctx.tick()
                result.update(error=None, cycles=cyc, got=[
                    np.array([h.byte(ctx, off + i) for i in range(lo, hi)], np.uint8)
                    for off, _, lo, hi in spans])
                return
            await ctx.tick()
        result.update(error="timeout", cycles=max_cycles)

    sim.add_testbench(bench)
    sim.run()
    slices = []
    if result["error"] is None:
        for o, ((_, addr, lo, hi), got) in enumerate(zip(spans, result["got"])):
            slices.append((o, after[addr + lo:addr + hi], got))
    return result["error"], result["cycles"], slices


def _check(core_cls, case, cfg=CFG, what=""):
    err, cycles, slices = run_core(core_cls, case, cfg)
    assert err is None, f"{what}: {err} after {cycles} cycles"
    for o, want, got in slices:
        assert np.array_equal(want, got), f"{what} output {o}: want {want.tolist()}\n got {got.tolist()}"


def _attn_ops(opcode: str) -> list[int]:
    prog, _ = _network()
    return [op.index for op in prog.ops if op.opcode == opcode]


@pytest.mark.parametrize("opcode", ["MAT.ATTN_KV", "MAT.ATTN_QKV"])
def test_core_alone_is_bit_exact_on_the_network(opcode):
    for k in _attn_ops(opcode):
        _check(AttnCore, network_case(k), what=f"op {k}")


@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("opcode", ["MAT.ATTN_KV", "MAT.ATTN_QKV"])
def test_core_alone_is_bit_exact_on_two_heads(opcode, preset):
    """Two heads of an odd dim on an odd token count: padded taps, lanes and pixels, the second
    head's bases and table rows, the output at a channel offset."""
    cfg = PRESETS[preset]
    case = synthetic_case(cfg, opcode, heads=2, dim=5, h=3, w=3, out_offset=2)
    _check(AttnCore, case, cfg, what=f"{preset} {opcode}")


def test_qkv_core_with_the_divisor_mantissa_bit():
    """The divisor's mantissa bit (SPEC 5.4) on two heads: both rows of every column's multiplier,
    loaded after the first, picked per token."""
    case = synthetic_case(PRESETS["tiny"], "MAT.ATTN_QKV", heads=2, dim=5, h=3, w=3, out_offset=2, frac=1)
    assert sum(p.name == "M_o1" for p in case[1].params) == 1
    _check(AttnCore, case, PRESETS["tiny"], what="tiny MAT.ATTN_QKV, mantissa bit")


def test_kv_core_refuses_more_tokens_than_the_weight_buffer():
    """ATTN_KV reduces over the tokens: past mat_wbuf_words * mat_mults of them, BAD_GEOMETRY (the
    input's width patched in the record; nothing is read)."""
    k = _attn_ops("MAT.ATTN_KV")[0]
    prog, _ = _network()
    x = prog.tensors[prog.ops[k].inputs[0]]
    wide = CFG.mat_wbuf_words * CFG.mat_mults // x.shape[1] + 1

    def patch(rec):      # operand 0's dims word: d1 (bits 0..15), d2 (bits 16..31)
        struct.pack_into("<HH", rec, 4 * (encoding.OPERAND_WORDS + 2), x.shape[1], wide)
    err, _, _ = run_core(AttnCore, network_case(k), patch_record=patch)
    assert err == ErrorCode.BAD_GEOMETRY


@pytest.mark.sim
@pytest.mark.slow        # each on a build of its own; tb/test_executors.py replays them together in CI
def test_attention_executors_are_bit_exact():
    from rtl.exec_attn import attn_executor
    failures = replay_failures({"MAT.ATTN_KV": attn_executor, "MAT.ATTN_QKV": attn_executor}, "exec_attn")
    assert not failures, "\n".join(failures)
