"""rtl/layernorm.py under Verilator vs golden.ops.layernorm (SPEC 7), bit-exact on every element."""
import numpy as np
import pytest

from golden import ops
from rtl.layernorm import DEFAULT_FRAC_BITS, DEFAULT_RECIP_BITS, cycles_per_token
from tb import norm_ops
from tb.norm_cases import CONFIGS


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


def ln_case(cfg, case, tokens, C, seed, kind="random", eps=None, fine=False, gap=0.0, bp=0.0):
    """``fine``: SPEC 7's finer variant K = 47, F = 16 instead of the accelerator's K = 31, F = 10."""
    rng = np.random.default_rng(seed)
    s_x, s_out = float(rng.uniform(0.01, 0.1)), float(rng.uniform(0.02, 0.2))
    gamma = rng.uniform(0.05, 3.0, C) * rng.choice([-1, 1], C)
    beta = rng.uniform(-2, 2, C)
    widths = {"recip_bits": 47, "frac_bits": 16} if fine else {}
    eps_int, G, B, n_g = ops.layernorm_params(gamma, beta, s_x, s_out, 1e-5,
                                              **({"frac_bits": 16} if fine else {}))
    if eps is not None:
        eps_int = eps                        # e.g. 0: constant rows then have V = 0 (R = isqrt(2^(2 RB)))
    z_x, z_out = int(rng.integers(0, 256)), int(rng.integers(0, 256))
    x = ln_rows(rng, tokens, C, kind)
    kw = {"x": x, "z_x": z_x, "eps_int": eps_int, "G": G, "B": B, "n_g": n_g, "z_out": z_out, **widths}
    return norm_ops.layernorm(cfg, case, kw, ops.layernorm(**kw), gap=gap, backpressure=bp, seed=seed)


def test_layernorm_defaults_follow_golden():
    """The unit's default reciprocal and fraction widths are golden's (SPEC 7)."""
    assert (DEFAULT_RECIP_BITS, DEFAULT_FRAC_BITS) == (ops.LN_RECIP_BITS, ops.LN_FRAC_BITS)


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
    ln_case(cfg, "extremes_eps0", tokens=10, C=7, seed=67, kind="extremes", eps=0, gap=0.2, bp=0.2)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_layernorm_throughput(cfg):
    """No stalls: each token takes exactly cycles_per_token(G) = 2 G + 3 RB + 21 cycles (2 G + 114)."""
    res = ln_case(cfg, "throughput", tokens=3, C=10, seed=63)
    assert res["cycles"] == 3 * cycles_per_token(5) == 3 * (2 * 5 + 114)


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


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("cfg", [CONFIGS["tiny"]], ids=["tiny"])
def test_layernorm_fine_variant(cfg):
    """SPEC 7's finer K = 47, F = 16 (94-bit dividend): the same unit built with recip_bits=47."""
    ln_case(cfg, "fine_random", tokens=30, C=19, seed=68, fine=True, gap=0.2, bp=0.2)
    ln_case(cfg, "fine_extremes", tokens=10, C=7, seed=69, kind="extremes", eps=0, fine=True)
