"""rtl/layernorm.py under Verilator vs golden.ops.layernorm (SPEC 7), bit-exact on every element."""
import numpy as np
import pytest

from golden import ops
from rtl.layernorm import LayerNorm, cycles_per_token
from tb.norm_cases import CONFIGS, lane_beats, pad_channels, param_rows, run_stream_case

FACTORY = "rtl.layernorm:LayerNorm"


def ln_rows(rng, tokens, C, kind):
    """Token rows: random, constant (V = eps_int), half 0 / half 255, single outliers, all-max."""
    if kind == "random":
        centre = rng.integers(0, 256, (tokens, 1))
        return np.clip(centre + rng.normal(0, rng.uniform(1, 80, (tokens, 1)), (tokens, C)), 0, 255).astype(np.int64)
    if kind == "extremes":
        rows = []
        for t in range(tokens):
            k = t % 5
            if k == 0:
                rows.append(np.full(C, rng.integers(0, 256)))
            elif k == 1:
                r = np.zeros(C, dtype=np.int64)
                r[rng.permutation(C)[: C // 2]] = 255
                rows.append(r)
            elif k == 2:
                r = np.full(C, rng.integers(0, 256))
                r[rng.integers(C)] = 0 if r[0] > 127 else 255
                rows.append(r)
            elif k == 3:
                rows.append(np.full(C, 255))
            else:
                rows.append(rng.choice([0, 255], C))
        return np.array(rows, dtype=np.int64)
    raise ValueError(kind)


def ln_case(cfg, case, tokens, C, seed, kind="random", gap=0.0, bp=0.0):
    rng = np.random.default_rng(seed)
    L = cfg.mat_lanes
    s_x, s_out = float(rng.uniform(0.01, 0.1)), float(rng.uniform(0.02, 0.2))
    gamma = rng.uniform(0.05, 3.0, C) * rng.choice([-1, 1], C)
    beta = rng.uniform(-2, 2, C)
    eps_int, G, B, n_g = ops.layernorm_params(gamma, beta, s_x, s_out, 1e-5)
    eps_int = max(int(eps_int), 2)          # golden needs V >= 2 (2^62 // V < 2^62) on constant rows
    z_x, z_out = int(rng.integers(0, 256)), int(rng.integers(0, 256))
    x = ln_rows(rng, tokens, C, kind)
    exp = ops.layernorm(x, z_x, eps_int, G, B, n_g, z_out, 0, 255)
    # padding lanes: x = z_x (adds nothing to the sums) and G = B = 0, so their output is z_out
    xp, Gp, Bp, np_ = pad_channels(x, L, z_x), pad_channels(G, L, 0), pad_channels(B, L, 0), pad_channels(n_g, L, 0)
    expp = pad_channels(exp, L, z_out)
    groups = xp.shape[1] // L
    beats = lane_beats(xp, L, "x", extra=lambda r, g: {"last": int(g == groups - 1)})
    exp_beats = [{"q": b["x"]} for b in lane_beats(expp, L, "x")]
    return run_stream_case("layernorm", FACTORY, cfg, case, inputs={"i": beats}, expected={"o": exp_beats},
                           ports={"channels": C, "z_x": z_x, "eps_int": eps_int, "z_out": z_out, "lo": 0, "hi": 255},
                           prm={"prm": param_rows(L, g=Gp, b=Bp, n=np_)}, gap=gap, backpressure=bp, seed=seed,
                           op={"name": "layernorm", "tokens": tokens, "channels": C, "lanes": L, "groups": groups,
                               "beats": len(beats), "latency": LayerNorm.OUT_LATENCY,
                               "calc_cycles": LayerNorm.CALC_CYCLES,
                               "ideal_cycles": tokens * cycles_per_token(groups)})


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_layernorm_random_stalls(cfg):
    """40 tokens x 27 channels (1,080 elements), random gaps and backpressure."""
    ln_case(cfg, "random_stalls", tokens=40, C=27, seed=61, gap=0.3, bp=0.3)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_layernorm_extremes(cfg):
    """Constant rows (V = eps_int), half-0/half-255 rows, single outliers, all-max, 0/255 noise."""
    ln_case(cfg, "extremes", tokens=20, C=16, seed=62, kind="extremes", gap=0.2, bp=0.2)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_layernorm_throughput(cfg):
    """No stalls: each token takes exactly cycles_per_token(G) = 2 G + 104 cycles."""
    res = ln_case(cfg, "throughput", tokens=3, C=10, seed=63)
    assert res["cycles"] == 3 * cycles_per_token(5)


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("cfg", list(CONFIGS.values()), ids=list(CONFIGS))
def test_layernorm_random_large(cfg):
    ln_case(cfg, "random_large", tokens=60, C=100, seed=64, gap=0.2, bp=0.4)


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("cfg", [CONFIGS["small"]], ids=["small"])
def test_layernorm_head_width(cfg):
    """The widths of B0's and B3's head LayerNorm vectors (1600, 2560 channels)."""
    ln_case(cfg, "head_1600", tokens=2, C=1600, seed=65, gap=0.1, bp=0.1)
    ln_case(cfg, "head_2560", tokens=2, C=2560, seed=66, kind="extremes", gap=0.1, bp=0.1)
