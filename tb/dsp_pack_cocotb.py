"""Cocotb side of tb/test_dsp_pack.py: one (x_hi, w) pair per cycle into 2^a_bits packed multipliers
(lane i holds x_lo = i), every lane's two products checked against Python's x_lo * w and x_hi * w.

The expected payloads are packed integers: ``lo`` depends on ``w`` only (one
per weight, cached) and ``hi`` is ``x_hi * w`` in every lane (its code times a
repunit), so a cycle costs two integer compares; a mismatching cycle is
unpacked lane by lane for the report."""
import time

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from tb.cocotb_kit import TB, assert_equal, load_case, write_result


def _fold(values, width):
    out = 0
    for i, v in enumerate(values):
        out |= (v & ((1 << width) - 1)) << (i * width)
    return out


def _unfold(raw, width, n):
    out = []
    for i in range(n):
        v = (raw >> (i * width)) & ((1 << width) - 1)
        out.append(v - (1 << width) if v >> (width - 1) else v)
    return out


@cocotb.test()
async def packed_products(dut):
    p, a = load_case()
    A, LOW, HIW = p["a_bits"], p["lo_width"], p["hi_width"]
    lanes = 1 << A
    x_his, ws = [int(v) for v in a["x_hi"]], [int(v) for v in a["w"]]
    tb = TB(dut, seed=p["seed"])
    dut.x_lo.value = _fold(range(lanes), A)
    dut.x_hi.value = 0
    dut.w.value = 0
    await tb.reset()

    rep = _fold([1] * lanes, HIW)                  # the repunit: x_hi * w in every lane
    lo_cache: dict[int, int] = {}
    bad_cycles = 0
    t0 = time.time()
    for i in range(len(ws) + 1):
        if i < len(ws):
            dut.x_hi.value = x_his[i]
            dut.w.value = ws[i] & ((1 << p["w_bits"]) - 1)
        await ReadOnly()                            # registers hold the pair driven one cycle earlier
        if i:
            xh, w = x_his[i - 1], ws[i - 1]
            want_lo = lo_cache.get(w)
            if want_lo is None:
                want_lo = lo_cache[w] = _fold([x * w for x in range(lanes)], LOW)
            want_hi = ((xh * w) & ((1 << HIW) - 1)) * rep
            got_lo, got_hi = int(dut.lo.value), int(dut.hi.value)
            if got_lo != want_lo or got_hi != want_hi:
                bad_cycles += 1
                what = f"{p['case']} x_hi={xh} w={w}"
                try:
                    assert_equal(_unfold(got_lo, LOW, lanes), [x * w for x in range(lanes)], f"{what} lo (lane = x_lo)")
                    assert_equal(_unfold(got_hi, HIW, lanes), [xh * w] * lanes, f"{what} hi (lane = x_lo)")
                except AssertionError:
                    if bad_cycles >= 5:
                        raise
        await RisingEdge(tb.clk)
    assert bad_cycles == 0, f"MISMATCH {p['case']}: {bad_cycles} cycles had wrong products"
    write_result({"cycles": len(ws), "products": 2 * lanes * len(ws), "seconds": round(time.time() - t0, 1)})
