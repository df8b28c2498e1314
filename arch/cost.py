"""Cycle costs of the machine's operations, as rtl/ builds the engines: one function per operation.

Every function takes the shared :class:`~arch.config.AccelConfig` and the shape
of one operation and returns the cycles one engine instance (one of the
``replicas``) needs when its input stream never stalls and its output is never
back-pressured: the quantity the rtl/ testbenches measure.  The committed
records of those measurements (``tb/baselines/cycles/<unit>/<case>.json``) are
replayed through :func:`unit_cycles` by ``tests/test_pysim_vs_rtl.py``, which
requires exact agreement.  The compiler (arch/compiler.py) chooses its
schedule with these functions and pysim/ prices the compiled program with them.

Streaming units (requant, hswish, residual, ...) take one beat of ``lanes``
elements per cycle behind a fixed pipeline: ``beats + LATENCY``
(arch/timing.py, where the rtl/ components take their ``LATENCY`` from).
"""
from __future__ import annotations

import functools

from . import timing
from .config import AccelConfig
from .memory import Traffic, band_bytes, line_bytes, weight_passes


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def tree_depth(cfg: AccelConfig) -> int:
    """Registered adder-tree levels of a MAT lane: log2(mat_mults) when cfg.tree_pipeline."""
    return (cfg.mat_mults.bit_length() - 1) if cfg.tree_pipeline else 0


# ------------------------------------------------------ both compute engines --
# rtl/mat_engine.py and rtl/rmac_engine.py run a sequence of commands the same way.
# Each engine has two weight buffers (ping-pong) and a one-deep command slot: a
# command is accepted while the previous one is issuing (in the cycle that one starts
# at the earliest), loads its weights into the buffer the issuing command does not read
# (``W`` beats, one per cycle; 0 when it reuses the buffer loaded last), and starts
# issuing (``I`` input beats / taps, one per cycle) as soon as its weights are in and
# the previous command has issued its last beat; the previous command's pipeline drains
# while it issues.  With the input stream never stalled, the output never
# back-pressured and the weight stream always available, from the first cmd handshake
# to the last output handshake inclusive:
#
#     cycles = ISSUE + max(START, W[0]) + sum_i max(I[i], W[i+1]) + PIPE     (W[n] = 0)
#
# ISSUE = 1 (the first handshake), START = 1 (a first command that loads nothing starts
# the cycle after its handshake; one that loads starts right after its last weight
# beat), PIPE the engine's pipeline behind its last issued beat.  Inside a layer the
# commands have the same W <= I (a command's weights are one beat per reduction word /
# tap, its input at least that), so only the first command's load and one pipeline
# drain are exposed: cycles = 1 + W + n*I + PIPE.
def back_to_back(cmd_cycles: list[int], streamed: bool = False, loads: list[int] | None = None,
                 pipe: int = 0, issue: int = 1, start: int = 1) -> int:
    """Cycles of commands issued back to back on a double-buffered engine (the formula above).

    ``cmd_cycles[i]`` are command i's issue cycles ``I[i]``, ``loads[i]`` its weight beats
    ``W[i]`` (default: none), ``pipe`` the pipeline after the last issued beat.
    ``streamed`` (what-if, not the RTL): the issue cycles alone, as if the first
    weight load and the pipeline fill and drain were hidden too.
    """
    n = len(cmd_cycles)
    if n == 0:
        return 0
    if streamed:
        return sum(cmd_cycles)
    w = list(loads) if loads is not None else [0] * n
    if len(w) != n:
        raise ValueError(f"back_to_back: {n} commands but {len(w)} weight loads")
    w.append(0)
    return issue + max(start, w[0]) + sum(max(c, w[i + 1]) for i, c in enumerate(cmd_cycles)) + pipe


# ---------------------------------------------------------------- MAT engine --
# rtl/mat_engine.py: one command computes a *tile*: M output channels (lanes) for
# ``groups`` pixel groups of L pixels (the replicas share the weights), reducing over
# ``chunks`` words of N taps.  With ``load`` it takes ``chunks`` weight words (W =
# chunks, one per cycle, into the idle buffer); it issues one input beat per cycle
# (I = groups * chunks); the result leaves after the multiply stage, T tree levels and
# the accumulator (PIPE = T + MAT_PIPE).
def mat_tiles_cycles(cfg: AccelConfig, tiles, streamed: bool = False) -> int:
    """Tiles ``(chunks, groups)`` or ``(chunks, groups, load)`` (default load) issued back to back:
    :func:`back_to_back` with I = groups * chunks, W = load * chunks, PIPE = T + 3."""
    issues, loads = [], []
    for t in tiles:
        chunks, groups = t[0], t[1]
        load = t[2] if len(t) > 2 else True
        if chunks < 1 or groups < 1:
            raise ValueError(f"MAT tile needs chunks >= 1 and groups >= 1, got chunks={chunks} groups={groups}")
        if chunks > cfg.mat_wbuf_words:
            raise ValueError(f"MAT tile of {chunks} weight words exceeds mat_wbuf_words={cfg.mat_wbuf_words}")
        issues.append(groups * chunks)
        loads.append(int(bool(load)) * chunks)
    return back_to_back(issues, streamed, loads, pipe=tree_depth(cfg) + timing.MAT_PIPE,
                        issue=timing.MAT_ISSUE, start=timing.MAT_START)


def mat_tile_cycles(cfg: AccelConfig, chunks: int, groups: int, load: bool = True, streamed: bool = False) -> int:
    """One tile alone (cmd accepted .. last output):
    ``1 + max(1, load * chunks) + groups * chunks + T + 3``.

    Tiles back to back overlap (:func:`mat_tiles_cycles`): the next tile's weights load while
    this one issues, and this one's pipeline drains while the next one issues.
    ``streamed`` (what-if): ``groups * chunks``.
    """
    return mat_tiles_cycles(cfg, [(chunks, groups, load)], streamed)


def mat_passes(cfg: AccelConfig, red: int) -> list[int]:
    """Weight words of each pass of a reduction of ``red`` taps: a reduction longer than the
    weight buffer is cut into passes whose partial sums come back as the next pass's bias."""
    chunks = cdiv(red, cfg.mat_mults)
    full, rest = divmod(chunks, cfg.mat_wbuf_words)
    return [cfg.mat_wbuf_words] * full + ([rest] if rest else [])


@functools.lru_cache(maxsize=1 << 16)
def mat_matmul_cycles(cfg: AccelConfig, rows: int, red: int, cols: int, load: bool = True,
                      streamed: bool = False) -> int:
    """``rows`` x ``cols`` outputs, each a dot product of length ``red``, as back-to-back tiles.

    Rows go to the L replicas (``ceil(rows / L)`` pixel groups), columns to the
    M lanes (``ceil(cols / M)`` tiles, each loading its own weights), the
    reduction to ``ceil(red / N)`` words, in :func:`mat_passes`; the tiles (column tile
    by column tile, pass by pass) run back to back (:func:`mat_tiles_cycles`).
    """
    if min(rows, red, cols) < 1:
        raise ValueError(f"MAT op needs positive rows/red/cols, got {rows}/{red}/{cols}")
    groups = cdiv(rows, cfg.replicas)
    tiles = [(ch, groups, load) for ch in mat_passes(cfg, red)]
    return mat_tiles_cycles(cfg, tiles * cdiv(cols, cfg.mat_lanes), streamed)


def mat_ideal_cycles(cfg: AccelConfig, macs: int) -> int:
    return cdiv(macs, cfg.mat_multipliers)


@functools.lru_cache(maxsize=1 << 16)
def mat_conv_cycles(cfg: AccelConfig, cin: int, cout: int, oh: int, ow: int, k: int = 1,
                    groups: int = 1, streamed: bool = False) -> int:
    """Generic / pointwise / grouped convolution: one tile per (conv group, M output channels).

    The reduction of a generic conv is the im2col'd (cin/groups) x k x k window;
    the lanes of a tile share one broadcast input, so they take output channels
    of the same conv group.
    """
    if cin % groups or cout % groups:
        raise ValueError(f"channels {cin}->{cout} not divisible by groups={groups}")
    return groups * mat_matmul_cycles(cfg, oh * ow, cin // groups * k * k, cout // groups, streamed=streamed)


def mat_linear_cycles(cfg: AccelConfig, cin: int, cout: int, streamed: bool = False) -> int:
    """One input vector: either the vector is the (single) pixel and the weights go to the
    lanes (1 of L replicas busy), or the weight rows stream in as "pixels" against the
    vector held as the weights of one lane (1 of M lanes busy); the cheaper of the two."""
    return min(mat_matmul_cycles(cfg, 1, cin, cout, streamed=streamed),
               mat_matmul_cycles(cfg, cout, cin, 1, streamed=streamed))


def mat_attn_kv_cycles(cfg: AccelConfig, tokens: int, dim: int, streamed: bool = False) -> int:
    """One head's ``k^T [v | 1]``: rows are the ``dim`` rows of kv, the reduction runs
    over ``tokens``, lanes are the ``dim`` columns of v plus the ones lane (the k-sum)."""
    return mat_matmul_cycles(cfg, rows=dim, red=tokens, cols=dim + 1, streamed=streamed)


def mat_attn_qkv_cycles(cfg: AccelConfig, tokens: int, dim: int, streamed: bool = False) -> int:
    """One head's ``q [kv | ks]``: rows are tokens, lanes the ``dim`` kv columns and ks."""
    return mat_matmul_cycles(cfg, rows=tokens, red=dim, cols=dim + 1, streamed=streamed)


# -------------------------------------------------------------- R-MAC engine --
# rtl/rmac_engine.py: PE (s, t) of replica l owns output pixel s of an output-row
# segment of S pixels, channel t of T channels; replica l takes output row oy + l
# (same weights).  One command per group of T channels, back to back
# (:func:`back_to_back`): W = load * kh * kw weight beats into the idle buffer,
# I = rows * xsegs * kh * kw taps (a command's first row beat is taken in the cycle it
# starts, the next row in the cycle of a row's last tap), PIPE = 3;
# with rows = ceil(Ho / L) output row groups and xsegs = ceil(Wo / S) segments
# (depthwise), or kh = K input channels, kw = 1, rows = ceil(P / (L*S)), xsegs = 1
# (pointwise mode; K must fit the weight buffer).
def rmac_buffer_depth(cfg: AccelConfig) -> int:
    """Taps the R-MAC weight buffer holds: at least one 5x5 kernel."""
    return max(cfg.rmac_wbuf_words, timing.KMAX * timing.KMAX)


def rmac_segment_width(cfg: AccelConfig) -> int:
    """Input positions of one row beat: S outputs at the largest stride and kernel."""
    return (cfg.rmac_rows - 1) * timing.SMAX + timing.KMAX


def rmac_cmds_cycles(cmds, streamed: bool = False) -> int:
    """Commands ``(kh, kw, rows, xsegs)`` or ``(kh, kw, rows, xsegs, load)`` (or dicts with those
    keys; default load) issued back to back: :func:`back_to_back` with I = rows * xsegs * kh * kw,
    W = load * kh * kw, PIPE = 3."""
    issues, loads = [], []
    for c in cmds:
        if isinstance(c, dict):
            kh, kw, rows, xsegs, load = c["kh"], c["kw"], c["rows"], c["xsegs"], c.get("load", True)
        else:
            kh, kw, rows, xsegs = c[:4]
            load = c[4] if len(c) > 4 else True
        if min(kh, kw, rows, xsegs) < 1:
            raise ValueError(f"R-MAC command needs kh, kw, rows, xsegs >= 1, got {kh}, {kw}, {rows}, {xsegs}")
        issues.append(rows * xsegs * kh * kw)
        loads.append(int(bool(load)) * kh * kw)
    return back_to_back(issues, streamed, loads, pipe=timing.RMAC_PIPE, issue=timing.RMAC_ISSUE,
                        start=timing.RMAC_START)


def rmac_cmd_cycles(kh: int, kw: int, rows: int, xsegs: int, load: bool = True, streamed: bool = False) -> int:
    """One command alone: ``1 + max(1, load*kh*kw) + rows*xsegs*kh*kw + 3``
    (``streamed``, what-if: ``rows*xsegs*kh*kw``); back to back see :func:`rmac_cmds_cycles`."""
    return rmac_cmds_cycles([(kh, kw, rows, xsegs, load)], streamed)


def rmac_dw_supported(k: int, stride: int, pad: int | None = None) -> bool:
    return 1 <= k <= timing.KMAX and 1 <= stride <= timing.SMAX and (pad is None or 0 <= pad <= timing.PADMAX)


@functools.lru_cache(maxsize=1 << 16)
def rmac_dw_cycles(cfg: AccelConfig, c: int, oh: int, ow: int, k: int, stride: int = 1,
                   streamed: bool = False) -> int:
    """Depthwise k x k conv producing ``c`` x ``oh`` x ``ow`` (stride only moves the reads)."""
    if not rmac_dw_supported(k, stride):
        raise ValueError(f"depthwise conv k={k} stride={stride} not supported by the R-MAC engine "
                         f"(k <= {timing.KMAX}, stride <= {timing.SMAX})")
    one = (k, k, cdiv(oh, cfg.replicas), cdiv(ow, cfg.rmac_rows))
    return rmac_cmds_cycles([one] * cdiv(c, cfg.rmac_cols), streamed)


def rmac_pw_fits(cfg: AccelConfig, cin: int) -> bool:
    return cin <= rmac_buffer_depth(cfg)


@functools.lru_cache(maxsize=1 << 16)
def rmac_pw_cycles(cfg: AccelConfig, cin: int, cout: int, oh: int, ow: int, streamed: bool = False) -> int:
    """Pointwise work on the R-MAC array: L*S pixels x T output channels per pass."""
    if not rmac_pw_fits(cfg, cin):
        raise ValueError(f"R-MAC pointwise with {cin} input channels exceeds its weight buffer "
                         f"({rmac_buffer_depth(cfg)} taps)")
    one = (cin, 1, cdiv(oh * ow, cfg.replicas * cfg.rmac_rows), 1)
    return rmac_cmds_cycles([one] * cdiv(cout, cfg.rmac_cols), streamed)


# --------------------------------------------------------- integer units --
# Every unit takes one beat of ``lanes`` values per cycle (one (row, channel group)
# of a tensor laid out as the MAT engine hands it over) and emits each result a fixed
# LATENCY later: from the first beat accepted to the last result, beats + LATENCY.
def unit_lanes(cfg: AccelConfig) -> int:
    """Values per beat of the streaming integer units (rtl/ default: mat_lanes)."""
    return cfg.mat_lanes


def stream_beats(rows: int, channels: int, lanes: int) -> int:
    return rows * cdiv(channels, lanes)


UNIT_LATENCY = {
    "requant": timing.REQUANT_LATENCY,
    "hswish": timing.HSWISH_LATENCY,
    "residual": timing.RESIDUAL_LATENCY,
    "divider": timing.DIVIDER_LATENCY,
    "avgpool": timing.AVGPOOL_LATENCY,
}


def stream_unit_cycles(unit: str, cfg: AccelConfig, rows: int, channels: int, lanes: int | None = None) -> int:
    """``rows`` x ``channels`` values through ``unit`` (see UNIT_LATENCY)."""
    return stream_beats(rows, channels, lanes or unit_lanes(cfg)) + UNIT_LATENCY[unit]


def layernorm_cycles(cfg: AccelConfig, features: int, lanes: int | None = None, tokens: int = 1,
                     recip_bits: int | None = None) -> int:
    """rtl/layernorm.py, one token after the other: G input beats, the sequential
    variance / reciprocal / isqrt, then G output beats (G = ceil(features / lanes))."""
    g = cdiv(features, lanes or unit_lanes(cfg))
    rb = cfg.ln_recip_bits if recip_bits is None else recip_bits
    return tokens * timing.layernorm_cycles_per_token(g, rb)


# ------------------------------------------------ testbench records dispatcher --
def unit_cycles(unit: str, op: dict, cfg: AccelConfig) -> int:
    """Predicted cycles of one recorded testbench operation (tests/test_pysim_vs_rtl.py).

    ``op`` is the record's shape dictionary as the testbench wrote it.
    """
    if unit in UNIT_LATENCY:
        lanes = op.get("lanes") or unit_lanes(cfg)
        if "rows" in op and "channels" in op:
            return stream_unit_cycles(unit, cfg, op["rows"], op["channels"], lanes)
        if "beats" in op:
            return op["beats"] + UNIT_LATENCY[unit]
        raise KeyError(f"{unit} record op {op} has neither rows/channels nor beats")
    if unit == "layernorm":
        return layernorm_cycles(cfg, op["channels"], op.get("lanes"), op.get("tokens", 1), op.get("recip_bits"))
    if unit == "mat_engine":
        if {"P", "K", "C"} <= op.keys():      # a P x K by K x C product (im2col'd convs included)
            return mat_matmul_cycles(cfg, op["P"], op["K"], op["C"])
        raise KeyError(f"mat_engine record op {op} lacks P/K/C")
    if unit == "rmac_engine":
        kind = op.get("kind", "")
        if kind.startswith("dw"):            # {kind: dwKxK, C, H, W, stride, Ho, Wo}
            return rmac_dw_cycles(cfg, op["C"], op["Ho"], op["Wo"], int(kind[2:].split("x")[0]), op["stride"])
        if kind == "pw":                      # {kind: pw, P, K, C}
            return rmac_pw_cycles(cfg, op["K"], op["C"], op["P"], 1)
        raise KeyError(f"rmac_engine record op {op}: unknown kind {kind!r}")
    raise KeyError(f"no cost function for RTL unit {unit!r}; known: "
                   f"{', '.join(sorted(list(UNIT_LATENCY) + ['layernorm', 'mat_engine', 'rmac_engine']))}")


# ------------------------------------------------------------ machine operations --
# One function prices each opcode of arch/program.py; a group of operations that
# stream into each other is priced by :func:`group_price` (the intra-layer pipeline).
def band_rows(oh: int, bands: int) -> list[int]:
    """Output rows of each of (at most) ``bands`` bands of a layer with ``oh`` rows."""
    r = cdiv(oh, max(1, min(bands, oh)))
    n = cdiv(oh, r)
    return [r] * (n - 1) + [oh - r * (n - 1)]


def op_engine_cycles(cfg: AccelConfig, op, bands: int = 1, streamed: bool = False) -> int:
    """Cycles the operation holds its engine (all replicas), computed in ``bands`` row bands
    (each band re-issues every command: the weights reload)."""
    g, c = op.geom, op.channels
    if c == 0:
        return 0
    if op.opcode == "MAT.CONV":
        return sum(mat_conv_cycles(cfg, g["cin"], c, r, g["ow"], g["k"], g["groups"], streamed)
                   for r in band_rows(g["oh"], bands))
    if op.opcode == "MAT.LINEAR":
        return mat_linear_cycles(cfg, g["cin"], c, streamed)
    if op.opcode == "MAT.ATTN_KV":
        return g["heads"] * mat_attn_kv_cycles(cfg, g["h"] * g["w"], g["dim"], streamed)
    if op.opcode == "MAT.ATTN_QKV":
        return g["heads"] * mat_attn_qkv_cycles(cfg, g["h"] * g["w"], g["dim"], streamed)
    if op.opcode == "RMAC.DW":
        return sum(rmac_dw_cycles(cfg, c, r, g["ow"], g["k"], g["stride"], streamed)
                   for r in band_rows(g["oh"], bands))
    if op.opcode == "RMAC.PW":
        return sum(rmac_pw_cycles(cfg, g["cin"], c, r, g["ow"], streamed) for r in band_rows(g["oh"], bands))
    if op.engine == "UNIT":
        return 0
    raise ValueError(f"no cost function for opcode {op.opcode!r}")


def op_unit_cycles(cfg: AccelConfig, op) -> int:
    """Cycles of the integer unit(s) behind one replica for the whole node this operation belongs to:
    tensors reach the units as the engines emit them, rows (pixels, tokens) split over the replicas,
    channels in beats of ``lanes``."""
    g, L = op.geom, cfg.replicas
    cout = g.get("cout", op.channels)
    e = op.epilogue
    if e in ("requant", "logits", "hswish", "add"):
        unit = {"logits": "requant", "add": "residual"}.get(e, e)
        return stream_unit_cycles(unit, cfg, cdiv(g.get("oh", 1) * g.get("ow", 1), L), cout)
    if e == "kv":
        return stream_unit_cycles("requant", cfg, cdiv(g["heads"] * g["dim"], L), g["dim"] + 1)
    if e == "divide":
        return stream_unit_cycles("divider", cfg, cdiv(g["heads"] * g["h"] * g["w"], L), g["dim"])
    if e == "pool":
        return stream_unit_cycles("avgpool", cfg, cdiv(g["h"] * g["w"], L), g["cin"])
    if e == "lnorm":
        return max(layernorm_cycles(cfg, cout), stream_unit_cycles("hswish", cfg, 1, cout))
    return 0


def op_unit_latency(op) -> int:
    return {"requant": UNIT_LATENCY["requant"], "logits": UNIT_LATENCY["requant"], "kv": UNIT_LATENCY["requant"],
            "hswish": UNIT_LATENCY["hswish"], "add": UNIT_LATENCY["residual"], "divide": UNIT_LATENCY["divider"],
            "pool": UNIT_LATENCY["avgpool"], "lnorm": UNIT_LATENCY["hswish"]}.get(op.epilogue, 0)


def _stages(program, group) -> list[list]:
    """The group's operations by stage: the operations of one IR node (a node split between the
    engines is one stage); a unit operation streams behind the stage before it."""
    stages: list[list] = []
    for i in group.ops:
        op = program.ops[i]
        if stages and (op.node == stages[-1][0].node or (op.engine == "UNIT" and stages[-1][0].engine != "UNIT")):
            stages[-1].append(op)
        else:
            stages.append([op])
    return stages


def group_traffic(cfg: AccelConfig, program, group, bands: int | None = None) -> Traffic:
    """DRAM traffic of one group with the program's placement (arch/memory.py's rules)."""
    bands = group.bands if bands is None else bands
    T = program.tensors
    t = Traffic()
    seen_in, seen_out = set(), set()
    node_ops: dict[str, list] = {}
    for i in group.ops:
        node_ops.setdefault(program.ops[i].node, []).append(program.ops[i])
    for node, ops in node_ops.items():
        first = ops[0]
        for name in first.inputs:
            x = T[name]
            if name in seen_in or x.space != "dram":
                continue
            seen_in.add(name)
            t.add(first.index, "act_in", x.bytes)
        y = T[first.output]
        if y.space == "dram" and first.output not in seen_out:
            seen_out.add(first.output)
            t.add(first.index, "act_out", y.bytes)
        if y.space == "line":
            if band_bytes(y.shape[1], y.shape[2], y.shape[0], bands, y.window) > line_bytes(cfg):
                t.add(first.index, "spills", 2 * y.bytes)
        wbytes = 0
        for op in ops:
            t.add(op.index, "weights", op.weight_bytes + op.param_bytes)
            wbytes += op.weight_bytes + op.param_bytes
        passes = weight_passes(cfg, wbytes)
        if passes > 1:
            x = T[first.inputs[0]]
            if x.space != "act":
                t.add(first.index, "spills", (passes - 1) * x.bytes)
    return t


def group_price(cfg: AccelConfig, program, group, bands: int | None = None, streamed: bool = False) -> dict:
    """Cycles of one group: the engines run the stages side by side, band by band.

    Inside a group the two engines work at the same time on different stages (the
    depthwise conv of band b on the R-MAC array while the MAT engine works on bands
    b+1 and b-1); a stage holds its engine for the longer of its MAC time and its units'
    time.  With more than one band, an engine whose first job needs the other's output
    waits for the producer's first band, and the MAT engine finishes the last band after
    the last depthwise conv; with one band the stages run one after the other.  The
    group then takes that span plus the last unit's latency, or its DRAM time if longer.
    """
    nb = group.bands if bands is None else bands
    per_op: dict[int, dict] = {}
    rows = []
    for st in _stages(program, group):
        m = r = units = 0
        for op in st:
            e = op_engine_cycles(cfg, op, nb, streamed)
            u = op_unit_cycles(cfg, op)
            if op.engine == "MAT":
                m += e
            elif op.engine == "RMAC":
                r += e
            units = max(units, u)
            per_op[op.index] = dict(engine_cycles=e, unit_cycles=u)
        m_eff = max(m, units) if m else 0
        r_eff = max(r, units) if (r and not m) else r
        u_eff = units if not (m or r) else 0
        rows.append(dict(ops=[op.index for op in st], m=m, r=r, units=units, m_eff=m_eff, r_eff=r_eff,
                         u_eff=u_eff, dw=any(op.opcode == "RMAC.DW" for op in st)))
    mat = sum(s["m_eff"] for s in rows)
    rmac = sum(s["r_eff"] for s in rows)
    serial_units = sum(s["u_eff"] for s in rows)
    dws = [i for i, s in enumerate(rows) if s["dw"]]
    rmac_start = drain = 0
    if dws and dws[0] > 0 and rows[0]["r"] == 0:
        rmac_start = cdiv(rows[dws[0] - 1]["m_eff"], nb)
    if dws and dws[-1] + 1 < len(rows):
        drain = cdiv(rows[dws[-1] + 1]["m_eff"], nb)
    if not dws:
        span = max(mat, rmac)
    elif nb == 1:
        span = sum(max(s["m_eff"], s["r_eff"]) for s in rows)
    else:
        span = max(mat, rmac_start + rmac + drain)
    span += serial_units
    last = rows[-1]["ops"]
    unit_lat = max(op_unit_latency(program.ops[i]) for i in last)
    compute = span + unit_lat
    tr = group_traffic(cfg, program, group, nb)
    dram_cycles = tr.total / cfg.dram_bytes_per_cycle
    cycles = max(compute, cdiv(tr.total, cfg.dram_bytes_per_cycle) if tr.total else 0)
    for s in rows:
        for i in s["ops"]:
            per_op[i].update(m_eff=s["m_eff"], r_eff=s["r_eff"])
    return dict(mat_busy=mat, rmac_busy=rmac, unit_busy=serial_units, fill=compute - max(mat, rmac),
                compute=compute, dram_cycles=dram_cycles, cycles=int(cycles),
                bound="memory" if dram_cycles > compute else "compute", traffic=tr, bands=nb, per_op=per_op)
