"""rtl/requant.py under Verilator vs golden.ops.requantize (SPEC 1), bit-exact on every element."""
import numpy as np
import pytest

from golden import ops
from rtl.requant import Requant
from tb.norm_cases import CONFIGS, edge_values, lane_beats, pad_channels, param_rows, run_stream_case

FACTORY = "rtl.requant:Requant"


def make_params(rng, C, out_lo, out_hi):
    """Per-channel M, n, z with the extremes: M = 0 / 2^30 / 2^31-1, n = 0 / 63, z at the range edges."""
    M = edge_values(rng, C, 1 << 30, (1 << 31) - 1, edges=(0,), p_edge=0.2)
    n = rng.integers(45, 54, C)                       # the range real layers use ...
    extreme = rng.random(C) < 0.25                    # ... and the ends of the 6-bit field
    n[extreme] = rng.choice([0, 1, 62, 63], int(extreme.sum()))
    z = edge_values(rng, C, out_lo, out_hi, p_edge=0.1)
    return M, n, z


def make_acc(rng, rows, C):
    acc = edge_values(rng, rows * C, -(1 << 31), (1 << 31) - 1, edges=(-1, 0, 1), p_edge=0.1)
    small = rng.random(rows * C) < 0.5                # typical magnitudes, so not everything saturates
    acc[small] = rng.integers(-(1 << 20), 1 << 20, int(small.sum()))
    return acc.reshape(rows, C)


def requant_case(cfg, case, rows, C, seed, out=("unsigned", 8), lo=0, hi=255, per_channel=True,
                 gap=0.0, bp=0.0):
    rng = np.random.default_rng(seed)
    L = cfg.mat_lanes
    acc = make_acc(rng, rows, C)
    if per_channel:
        M, n, z = make_params(rng, C, lo, hi)
        # padding channels: zero accumulators, M = 0, z = lo (their outputs are compared too)
        accp, Mp, np_, zp = (pad_channels(a, L, f) for a, f in ((acc, 0), (M, 0), (n, 0), (z, lo)))
        ports = {"lo": lo, "hi": hi}
        prm = {"prm": param_rows(L, m=Mp, n=np_, z=zp)}
    else:
        M, n, z = (int(v[0]) for v in make_params(rng, 1, lo, hi))
        accp, Mp, np_, zp = pad_channels(acc, L, 0), M, n, z
        ports = {"lo": lo, "hi": hi, "m": M, "n": n, "z": z}
        prm = {}
    exp = ops.requantize(accp, Mp, np_, zp, lo, hi, axis=1)
    beats_in = lane_beats(accp, L, "acc")
    if not per_channel:
        for b in beats_in:
            del b["group"]
    exp_beats = [{"q": b["acc"]} for b in lane_beats(exp, L, "acc")]
    kwargs = {"out_shape": list(out), "per_channel": per_channel}
    lat = Requant.LATENCY
    return run_stream_case("requant", FACTORY, cfg, case, inputs={"i": beats_in}, expected={"o": exp_beats},
                           ports=ports, prm=prm, kwargs=kwargs, gap=gap, backpressure=bp, seed=seed,
                           op={"name": "requantize", "rows": rows, "channels": C, "lanes": L,
                               "beats": len(beats_in), "latency": lat, "ideal_cycles": len(beats_in)})


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_requant_random_stalls(cfg):
    """~1,300 elements, random valid gaps and backpressure, per-channel parameters with extremes."""
    requant_case(cfg, "random_stalls", rows=97, C=13, seed=11, gap=0.3, bp=0.3)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_requant_throughput(cfg):
    """No stalls: one beat per cycle after the pipeline latency (recorded for pysim/)."""
    res = requant_case(cfg, "throughput", rows=64, C=8, seed=12)
    beats = 64 * 8 // cfg.mat_lanes
    assert res["cycles"] == beats + Requant.LATENCY


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("cfg", list(CONFIGS.values()), ids=list(CONFIGS))
def test_requant_random_large(cfg):
    requant_case(cfg, "random_large", rows=400, C=21, seed=13, gap=0.2, bp=0.4)


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_requant_logits_int16(cfg):
    """SPEC 8's use: signed 16-bit output, zero point 0, full int16 clamp."""
    requant_case(cfg, "logits_int16", rows=200, C=10, seed=14, out=("signed", 16), lo=-(1 << 15),
                 hi=(1 << 15) - 1, gap=0.2, bp=0.2)


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_requant_per_tensor_signed(cfg):
    """Per-tensor M, n, z (configuration ports); signed symmetric 8-bit range as kv uses."""
    requant_case(cfg, "per_tensor_signed", rows=300, C=6, seed=15, out=("signed", 8), lo=-127, hi=127,
                 per_channel=False, gap=0.3, bp=0.3)
