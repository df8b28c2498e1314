"""Which engine runs which layer, how the layers overlap, and what it adds up to.

Groups.  The layer list is cut into *groups*, runs of layers that stream into
each other tile by tile without a round trip through DRAM:

* an MBConv / DSConv (expand 1x1 -> depthwise -> project 1x1, with their
  requant/Hardswish and the residual add): the intra-layer pipeline, the
  depthwise conv on the R-MAC engine feeding the pointwise conv on the MAT
  engine band by band;
* the first half of a LiteMLA: qkv 1x1 -> aggregation 5x5 depthwise (R-MAC)
  -> grouped 1x1 -> ``k^T [v|1]`` accumulated as tokens stream out; the
  k-sum over *all* tokens is a barrier, so
* the second half of a LiteMLA is its own group: ``q [kv|ks]`` -> divisor log2
  code and shift division (the divisor buffer holds one divisor code per token)
  -> proj 1x1 -> residual add;
* the stem conv, the head conv with the global pool, the head's vector layers.

Engines.  Generic / pointwise / grouped convolutions, linear layers and the
attention products run on the MAT engine, depthwise convolutions on the
R-MAC engine (cost functions in :mod:`pysim.cost`).  Both are replicated
``replicas`` times; replicas share the output pixels (tokens) of a layer, the
heads or tokens of the attention products, the output features of a linear.

Overlap between the engines.  Inside a group the two engines run at the same
time on different layers (the depthwise of band b while the pointwise convs
work on bands b+1 and b-1), and the R-MAC array also takes a share of the
output channels of the group's pointwise convs, chosen so that both engines
finish together (``rmac_pointwise``; the inter-layer overlap).  A group then
takes ``max(MAT busy, R-MAC busy)`` plus the pipeline fill (the band the
consumer waits for before it can start, and the engines' pipeline latency),
or its DRAM time if that is longer (:mod:`pysim.memory`).

Integer units stream behind the engine that produces their input, ``lanes``
elements per cycle per replica; a layer holds its engine for the longer of
its MAC time and its units' time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rtl.config import AccelConfig

from . import cost
from .cost import cdiv
from .layers import Layer
from .memory import Traffic, act_half_bytes, group_traffic

MB_ROLES = ("inverted_conv", "depth_conv", "point_conv", "spatial_conv", "conv1", "conv2")


@dataclass
class Group:
    key: str
    layers: list = field(default_factory=list)   # compute and unit layers, in order
    in_bytes: int = 0
    out_bytes: int = 0
    kept_tensors: list = field(default_factory=list)  # (bytes, name) held across a barrier
    barrier_after: bool = False

    @property
    def compute(self) -> list:
        return [lay for lay in self.layers if lay.is_compute]

    @property
    def intermediates(self) -> list:
        return self.compute[:-1]


@dataclass
class LayerResult:
    name: str
    kind: str
    group: str
    engine: str
    macs: int
    elements: int
    cycles: int              # cycles the layer holds its engine(s) (units included)
    mat_cycles: int = 0
    rmac_cycles: int = 0
    unit_cycles: int = 0
    rmac_share: float = 0.0  # fraction of output channels computed on the R-MAC array
    utilization: float = 0.0  # MACs / (cycles x multipliers of the engines used)
    dram_bytes: int = 0
    dram_cycles: float = 0.0
    bound: str = "compute"
    shape: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class GroupResult:
    key: str
    mat_busy: int
    rmac_busy: int
    fill: int
    compute_cycles: int
    dram_cycles: float
    cycles: int
    bound: str
    traffic: Traffic
    bands: int = 1


# ------------------------------------------------------------- grouping --
def _attn_path(lay: Layer, attn_paths: list[str]) -> str | None:
    for p in attn_paths:
        if lay.name == p or lay.name.startswith(p + ".") or lay.name.startswith(p + ":"):
            return p
    return None


def make_groups(layers: list[Layer]) -> list[Group]:
    attn_paths = sorted({lay.block for lay in layers if lay.kind == "attn_kv"}, key=len, reverse=True)
    groups: list[Group] = []
    seen_kv: set[str] = set()
    key = None
    for lay in layers:
        if lay.is_compute:
            p = _attn_path(lay, attn_paths)
            if p is not None:
                if lay.kind == "attn_kv":
                    seen_kv.add(p)
                    k = p + ":attn-kv"
                else:
                    k = p + (":attn-b" if p in seen_kv else ":attn-a")
            elif lay.role in MB_ROLES:
                k = lay.block
            else:
                k = lay.block or lay.name
            if k != key:
                groups.append(Group(key=k))
                key = k
        elif not groups:
            raise ValueError(f"layer list starts with integer unit {lay.name}; expected a convolution")
        groups[-1].layers.append(lay)
    for i, g in enumerate(groups):
        comp = g.compute
        g.in_bytes = comp[0].in_bytes
        last = [lay for lay in g.layers if lay.out_bytes][-1]
        g.out_bytes = last.out_bytes
        for a, b in zip(comp, comp[1:]):
            # a band of the consumer's window: k + stride rows of the producer's output
            a.extra["band_rows"] = (b.k + b.stride) if b.kind == "dw" else 1
        if g.key.endswith(":attn-a"):
            # q, k and v of every token (all scales) wait in the buffer for the k-sum
            # barrier, and so does the block input for the residual add after proj.
            kv = next(lay for lay in layers if lay.kind == "attn_kv" and g.key.startswith(lay.block + ":"))
            g.kept_tensors.append((3 * kv.heads * kv.tokens * kv.dim, kv.block + ":qkv"))
            g.kept_tensors.append((g.in_bytes, g.key + ":shortcut"))
        if g.key.endswith((":attn-b", ":attn-kv")):
            g.in_bytes = 0  # q, k, v and kv were kept by the first half (counted there)
    return groups


# ----------------------------------------------------- per-layer engine cost --
def _rep(n: int, cfg: AccelConfig) -> int:
    return cdiv(n, cfg.replicas)


def band_rows(oh: int, nb: int) -> list[int]:
    """Output rows of each of (at most) ``nb`` bands of a layer with ``oh`` rows."""
    r = cdiv(oh, max(1, min(nb, oh)))
    n = cdiv(oh, r)
    return [r] * (n - 1) + [oh - r * (n - 1)]


def mat_layer_cycles(cfg: AccelConfig, lay: Layer, cout: int | None = None, nb: int = 1,
                     streamed: bool = False) -> int:
    """Cycles of the MAT engine (all replicas) for ``cout`` output channels of ``lay``,
    computed in ``nb`` row bands (each band reloads the weights of every tile)."""
    if lay.kind in ("pw", "conv", "grouped"):
        cout = lay.cout if cout is None else cout
        if cout == 0:
            return 0
        g = lay.groups
        if g > 1 and cout != lay.cout:
            raise ValueError(f"{lay.name}: grouped conv cannot be split between engines")
        return sum(cost.mat_conv_cycles(cfg, lay.cin, cout, r, lay.ow, lay.k, g, streamed)
                   for r in band_rows(lay.oh, nb))
    if lay.kind == "linear":
        cout = lay.cout if cout is None else cout
        if cout == 0:
            return 0
        # One input vector: either the vector is the (single) pixel and the weights
        # go to the lanes (1 of L replicas busy), or the weight rows stream in as
        # "pixels" against the vector held as the weights of one lane (1 of M lanes busy).
        direct = cost.mat_matmul_cycles(cfg, 1, lay.cin, cout, streamed=streamed)
        swapped = cost.mat_matmul_cycles(cfg, cout, lay.cin, 1, streamed=streamed)
        return min(direct, swapped)
    if lay.kind == "attn_kv":
        return lay.heads * cost.mat_attn_kv_cycles(cfg, lay.tokens, lay.dim, streamed)
    if lay.kind == "attn_qkv":
        return lay.heads * cost.mat_attn_qkv_cycles(cfg, lay.tokens, lay.dim, streamed)
    raise ValueError(f"{lay.name}: kind {lay.kind} does not run on the MAT engine")


def rmac_layer_cycles(cfg: AccelConfig, lay: Layer, cout: int | None = None, nb: int = 1,
                      streamed: bool = False) -> int:
    cout = lay.cout if cout is None else cout
    if cout == 0:
        return 0
    if lay.kind == "dw":
        return sum(cost.rmac_dw_cycles(cfg, lay.cout, r, lay.ow, lay.k, lay.stride, streamed)
                   for r in band_rows(lay.oh, nb))
    if lay.kind == "pw":
        return sum(cost.rmac_pw_cycles(cfg, lay.cin, cout, r, lay.ow, streamed) for r in band_rows(lay.oh, nb))
    raise ValueError(f"{lay.name}: kind {lay.kind} does not run on the R-MAC engine")


def unit_layer_cycles(cfg: AccelConfig, lay: Layer) -> int:
    """Cycles of the integer unit behind one replica for its share of ``lay``.

    Tensors reach the units the way the MAT engine emits them: rows (pixels,
    tokens) split over the replicas, channels in beats of ``lanes``.
    """
    if lay.kind in ("requant", "hswish", "residual"):
        if lay.role == "kv":          # the kv matrix: rows i of every head, columns j
            rows, ch = lay.heads * lay.dim, lay.dim + 1
        else:
            rows, ch = lay.oh * lay.ow, lay.cout
        return cost.stream_unit_cycles(lay.kind, cfg, _rep(rows, cfg), ch)
    if lay.kind == "divide":
        return cost.stream_unit_cycles("divider", cfg, _rep(lay.heads * lay.tokens, cfg), lay.dim)
    if lay.kind == "pool":
        return cost.stream_unit_cycles("avgpool", cfg, _rep(lay.h * lay.w, cfg), lay.cin)
    if lay.kind == "layernorm":
        return cost.layernorm_cycles(cfg, lay.elements)
    raise ValueError(f"{lay.name}: {lay.kind} is not an integer unit")


# ------------------------------------------------------------- schedule --
@dataclass
class Options:
    rmac_pointwise: bool = True   # R-MAC takes a share of pointwise convs to balance the engines
    split_steps: int = 16         # granularity of that share
    max_bands: int = 64           # most row bands tried for a fused group
    # What-if, not the RTL: engines that prefetch the next command's weights and
    # overlap its pipeline fill with the previous command's drain.
    streamed: bool = False


def _split_cout(cfg: AccelConfig, cout: int, frac: float) -> int:
    """Output channels given to the R-MAC array: a multiple of its column count T."""
    t = cfg.rmac_cols
    c = int(round(frac * cout / t)) * t
    return max(0, min(cout, c))


def _band_options(cfg: AccelConfig, g: Group, opt: Options) -> list[int]:
    """Row-band counts tried for a fused group: bands of 1, 2, 4, ... and j*L output
    rows of the (first) depthwise conv (its R-MAC replicas take L rows at once).
    One band is always tried too (no band pipelining, the intermediate tensor
    spilled when it does not fit the line buffers)."""
    dws = [lay for lay in g.compute if lay.kind == "dw"]
    if not dws:
        return [1]
    oh = dws[0].oh
    heights = {2 ** i for i in range(12)} | {j * cfg.replicas for j in (1, 2, 3, 4, 6, 8, 16, 32)}
    return sorted({cdiv(oh, r) for r in heights if r <= oh and cdiv(oh, r) <= opt.max_bands} | {1})


def _schedule_group(cfg: AccelConfig, g: Group, opt: Options, in_on_chip: bool, out_on_chip: bool):
    comp = g.compute
    units_of: dict[int, list] = {}
    cur = None
    for lay in g.layers:
        if lay.is_compute:
            cur = id(lay)
            units_of[cur] = []
        else:
            units_of[cur].append(lay)
    ucyc = {id(u): unit_layer_cycles(cfg, u) for u in g.layers if not u.is_compute}
    pw = [lay for lay in comp if lay.kind == "pw" and cost.rmac_pw_fits(cfg, lay.cin)] if opt.rmac_pointwise else []
    dws = [i for i, lay in enumerate(comp) if lay.kind == "dw"]
    st = opt.streamed

    def evaluate(nb: int, frac: float):
        per = {}
        mat = rmac = 0
        for lay in comp:
            units = max([ucyc[id(u)] for u in units_of[id(lay)]], default=0)
            if lay.kind == "dw":
                m, r, cr = 0, rmac_layer_cycles(cfg, lay, nb=nb, streamed=st), lay.cout
            elif any(lay is q for q in pw):
                cr = _split_cout(cfg, lay.cout, frac)
                m, r = mat_layer_cycles(cfg, lay, lay.cout - cr, nb, st), rmac_layer_cycles(cfg, lay, cr, nb, st)
            else:
                m, r, cr = mat_layer_cycles(cfg, lay, nb=nb, streamed=st), 0, 0
            # a layer's units stream behind the engine that produces its outputs
            m_eff = max(m, units) if m else 0
            r_eff = max(r, units) if (r and not m) else r
            per[id(lay)] = (m, r, units, cr, m_eff, r_eff)
            mat += m_eff
            rmac += r_eff
        # Pipeline fill.  An engine whose first job depends on the other engine's output
        # waits for the producer's first band (the R-MAC array does not when it owns a
        # share of the group's first pointwise conv: it starts on that), and the MAT
        # engine finishes the last band of the layer after the last depthwise conv.
        rmac_start = drain = 0
        if dws and dws[0] > 0 and per[id(comp[0])][3] == 0:
            prod = comp[dws[0] - 1]
            rmac_start = cdiv(per[id(prod)][4], nb)
        if dws and dws[-1] + 1 < len(comp):
            drain = cdiv(per[id(comp[dws[-1] + 1])][4], nb)
        if not dws:
            span = max(mat, rmac)
        elif nb == 1:
            # no band pipelining: the depthwise conv waits for its whole input
            span = sum(max(per[id(l)][4], per[id(l)][5]) for l in comp)
        else:
            span = max(mat, rmac_start + rmac + drain)
        return span, mat, rmac, per

    best = None
    fracs = [0.0] + ([s / opt.split_steps for s in range(1, opt.split_steps + 1)] if pw else [])
    for nb in _band_options(cfg, g, opt):
        tr = group_traffic(cfg, g, in_on_chip, out_on_chip, nb)
        dram = tr.total / cfg.dram_bytes_per_cycle
        for frac in fracs:
            cand = evaluate(nb, frac)
            key = max(cand[0], dram)
            if best is None or key < best[0]:
                best = (key, cand, nb, tr)
    _, (span, mat_busy, rmac_busy, per), nb, tr = best
    last_units = units_of[id(comp[-1])]
    unit_lat = max([cost.UNIT_LATENCY.get(_unit_name(u), 0) for u in last_units], default=0)
    # (engine pipeline fill/drain is inside each tile's cycles; the last units' latency is not)
    fill = span - max(mat_busy, rmac_busy) + unit_lat
    return mat_busy, rmac_busy, fill, per, ucyc, nb, tr


def _unit_name(lay: Layer) -> str:
    return {"divide": "divider", "pool": "avgpool"}.get(lay.kind, lay.kind)


def simulate(cfg: AccelConfig, layers: list[Layer], opt: Options | None = None) -> dict:
    """Schedule ``layers`` on ``cfg``; returns totals and per-layer results (JSON-able)."""
    opt = opt or Options()
    groups = make_groups(layers)
    half = act_half_bytes(cfg)
    results: list[LayerResult] = []
    gres: list[GroupResult] = []
    prev_out_on_chip = False          # the image comes from DRAM
    for gi, g in enumerate(groups):
        in_on_chip = prev_out_on_chip if not g.key.endswith((":attn-b", ":attn-kv")) else True
        out_on_chip = g.out_bytes <= half and gi + 1 < len(groups)
        mat_busy, rmac_busy, fill, per, ucyc, nb, tr = _schedule_group(cfg, g, opt, in_on_chip, out_on_chip)
        dram_cycles = tr.total / cfg.dram_bytes_per_cycle
        compute = max(mat_busy, rmac_busy) + fill
        cycles = max(compute, int(-(-tr.total // cfg.dram_bytes_per_cycle)))
        bound = "memory" if dram_cycles > compute else "compute"
        gres.append(GroupResult(g.key, mat_busy, rmac_busy, fill, compute, dram_cycles, cycles, bound, tr, nb))
        prev_out_on_chip = out_on_chip
        for lay in g.layers:
            if lay.is_compute:
                m, r, units, cr, m_eff, r_eff = per[id(lay)]
                cyc = max(m_eff, r_eff)
                engine = "MAT" if m and not r else "R-MAC" if r and not m else \
                    f"MAT+R-MAC({cr}/{lay.cout})"
                share = cr / lay.cout if lay.cout else 0.0
                # MACs over the multiplier-cycles this layer held (its engines are busy
                # with other layers of the group the rest of the time)
                held = m_eff * cfg.mat_multipliers + r_eff * cfg.rmac_multipliers
                util = lay.macs / held if held else 0.0
                lr = LayerResult(lay.name, lay.kind, g.key, engine, lay.macs, lay.elements, cyc, m_eff, r_eff,
                                 units, share, util, shape=_shape(lay))
            else:
                lr = LayerResult(lay.name, lay.kind, g.key, "unit", 0, lay.elements, ucyc[id(lay)],
                                 unit_cycles=ucyc[id(lay)], shape=f"{lay.elements} el")
            lr.dram_bytes = tr.per_layer.get(lay.name, 0)
            lr.dram_cycles = lr.dram_bytes / cfg.dram_bytes_per_cycle
            lr.bound = "memory" if lr.dram_cycles > lr.cycles else "compute"
            results.append(lr)
    return _totals(cfg, layers, results, gres)


def _shape(lay: Layer) -> str:
    if lay.kind in ("attn_kv", "attn_qkv"):
        return f"{lay.heads}h x {lay.tokens}tok x d{lay.dim}"
    if lay.kind == "linear":
        return f"{lay.cin}->{lay.cout}"
    g = f" g{lay.groups}" if lay.groups > 1 and lay.kind != "dw" else ""
    return f"{lay.cin}->{lay.cout} {lay.k}x{lay.k}/s{lay.stride} @{lay.oh}x{lay.ow}{g}"


def _totals(cfg: AccelConfig, layers, results, gres) -> dict:
    macs = sum(lay.macs for lay in layers)
    cycles = sum(g.cycles for g in gres)
    secs = cycles / (cfg.clock_mhz * 1e6)
    dram = sum(g.traffic.total for g in gres)
    fps = 1.0 / secs
    gops = 2 * macs / secs / 1e9
    mem_cycles = sum(g.cycles for g in gres if g.bound == "memory")
    return {
        "config": cfg.to_dict(),
        "total_macs": macs,
        "cycles": cycles,
        "latency_ms": secs * 1e3,
        "fps": fps,
        "gops": gops,
        "peak_gops": cfg.peak_gops,
        "dram_gbps": cfg.dram_gbps,
        "mac_utilization": macs / (cycles * cfg.multipliers),
        "dsps": cfg.dsps,
        "gops_per_dsp": gops / cfg.dsps,
        "dram_bytes": dram,
        "dram_mb_per_frame": dram / 1e6,
        "dram_breakdown": {k: sum(getattr(g.traffic, k) for g in gres)
                           for k in ("weights", "act_in", "act_out", "spills")},
        "memory_bound_cycle_fraction": mem_cycles / cycles,
        "bound": "memory" if mem_cycles * 2 > cycles else "compute",
        "fill_cycles": sum(g.fill for g in gres),
        "mat_busy": sum(g.mat_busy for g in gres),
        "rmac_busy": sum(g.rmac_busy for g in gres),
        "groups": [{"key": g.key, "cycles": g.cycles, "mat_busy": g.mat_busy, "rmac_busy": g.rmac_busy,
                    "fill": g.fill, "bands": g.bands, "dram_bytes": g.traffic.total,
                    "spill_bytes": g.traffic.spills, "dram_cycles": g.dram_cycles,
                    "bound": g.bound} for g in gres],
        "layers": [r.to_dict() for r in results],
    }
