"""IR + configuration -> program (arch/program.py): engines, splits, bands, placement, DRAM layout.

The steps, in order (each a small function below):

1. **Operations.**  Every IR node becomes machine operations: depthwise convs
   on the R-MAC engine, every other convolution, the linears and the attention
   products on the MAT engine, residual adds, pooling and LayerNorm on the
   integer units.  An attention branch is two operations, ``k^T [v | 1]`` and
   ``q [kv | ks]``: the k-sum needs every token before any output.
2. **Groups.**  An operation joins the group before it when it reads the
   output of that group's last operation (the two stream into each other on
   chip), except across the attention barrier.
3. **Splits and bands.**  In every group, a share of each pointwise conv's
   output channels (a multiple of the R-MAC columns) may go to the R-MAC array
   in pointwise mode, and a group with a depthwise conv is cut into row bands
   for the intra-layer pipeline.  Both are chosen per group to minimise
   :func:`arch.cost.group_price` (compute and DRAM time).
4. **Placement.**  The image and the logits live in DRAM; a fused
   intermediate streams through the line buffers (``line``) when its band fits
   them; every other tensor gets activation-buffer space for its live range
   (first fit), else DRAM.
5. **DRAM layout.**  The program in binary (arch/encoding.py), the image, the
   logits, each operation's weights and parameter tables, the tensors placed in
   DRAM.

The compiler reads formats and shapes only: it needs no weight values, so a
float model's structure IR compiles too (pysim prices it).
"""
from __future__ import annotations

from . import cost, formats
from . import graph as arch_graph
from . import ir as arch_ir
from .config import AccelConfig
from .encoding import program_bytes
from .memory import act_bytes, band_bytes, line_bytes
from .program import Group, Op, Program, Tensor, align, param_tables

SPLIT_STEPS = 16          # granularity of the R-MAC share of a pointwise conv
MAX_BANDS = 64            # most row bands tried for a fused group


# --------------------------------------------------------------------------- 1. operations
def _range(ir: dict, tensor: str) -> tuple[int, int]:
    f = arch_ir.tensor_format(ir, tensor)
    return f.lo, f.hi


def _epilogue(ir: dict, nd: dict) -> str:
    if nd.get("act") == "hswish":
        return "hswish"
    return "logits" if nd["output"] == ir["graph_output"] else "requant"


def node_ops(ir: dict, n: arch_graph.Node, nd: dict, cfg: AccelConfig) -> list[Op]:
    """The machine operations of one IR node (before splits, groups and addresses)."""
    geom = dict(cin=n.cin, cout=n.cout, h=n.h, w=n.w, oh=n.oh, ow=n.ow)
    lo, hi = _range(ir, nd["output"])
    if n.is_mac:
        geom.update(k=n.k, stride=n.stride, pad=n.padding, groups=n.groups, macs=n.macs,
                    x_bits=int(ir["tensors"][nd["input"]]["bits"]), w_bits=int(nd["weight_bits"]))
        epi = _epilogue(ir, nd)
        if epi == "hswish":
            geom["pre_lo"], geom["pre_hi"] = _range(ir, nd["pre"])
        if n.kind == "linear":
            opcode = "MAT.LINEAR"
        elif n.kind == "dw" and cost.rmac_dw_supported(n.k, n.stride, n.padding):
            opcode = "RMAC.DW"
        else:
            opcode = "MAT.CONV"
        return [Op(0, opcode, n.name, 0, [nd["input"]], [nd["output"]], epi, 0, n.cout, geom, lo, hi)]
    if n.kind == "attention":
        H, d = n.heads, n.dim
        geom.update(heads=H, dim=d, macs=H * n.tokens * d * (d + 1), kv_bits=int(ir["tensors"][nd["kv"]]["bits"]),
                    code_bits=int(nd["log2_bits"]), out_offset=int(nd["out_channel_offset"]))
        if int(nd.get("log2_frac", 0)):       # the divisor's mantissa bit (SPEC 5.4); absent: powers of two
            geom["div_frac"] = int(nd["log2_frac"])
        if ir["kind"] == "quantized" and not nd["log2"]:
            raise ValueError(f"{n.name}: the divisor is not log2-quantized; the accelerator divides by shifts only "
                             "(quantize with the log2 technique on)")
        kv_lo, kv_hi = _range(ir, nd["kv"])
        return [Op(0, "MAT.ATTN_KV", n.name, 0, [nd["input"]], [nd["kv"], nd["ks"]], "kv", 0, H * d, dict(geom),
                   kv_lo, kv_hi),
                Op(0, "MAT.ATTN_QKV", n.name, 0, [nd["input"], nd["kv"], nd["ks"]], [nd["output"]], "divide", 0,
                   H * d, dict(geom), lo, hi)]
    if n.kind == "add":
        return [Op(0, "UNIT.ADD", n.name, 0, list(n.inputs), [nd["output"]], "add", 0, n.cout, geom, lo, hi)]
    if n.kind == "avgpool":
        return [Op(0, "UNIT.POOL", n.name, 0, list(n.inputs), [nd["output"]], "pool", 0, n.cout, geom, lo, hi)]
    if n.kind == "layernorm":
        F = formats.formats(cfg)
        geom.update(frac_bits=F.ln_frac_bits, recip_bits=F.ln_recip_bits)
        geom["pre_lo"], geom["pre_hi"] = _range(ir, nd["pre"])
        return [Op(0, "UNIT.LNORM", n.name, 0, list(n.inputs), [nd["output"]], "lnorm", 0, n.cout, geom, lo, hi)]
    raise ValueError(f"{n.name}: no machine operation for node kind {n.kind!r}")


# --------------------------------------------------------------------------- 2. groups
def make_groups(ops: list[Op]) -> list[Group]:
    """An operation joins the previous group when it reads the output of the group's last operation
    and that output goes nowhere else (one consumer node: the stream between the engines), or when
    it is a residual add reading it; never across the attention barrier (k^T v needs every token), and
    a residual add ends its block's group."""
    readers: dict[str, set] = {}
    for op in ops:
        for t in op.inputs:
            readers.setdefault(t, set()).add(op.node)
    groups: list[Group] = []
    for op in ops:
        prev = ops[groups[-1].ops[-1]] if groups else None
        fuse = (prev is not None and op.opcode != "MAT.ATTN_KV" and prev.opcode not in ("MAT.ATTN_KV", "UNIT.ADD")
                and (prev.node == op.node or (prev.output in op.inputs and
                                              (op.opcode == "UNIT.ADD" or len(readers[prev.output]) == 1))))
        if fuse:
            groups[-1].ops.append(op.index)
        else:
            groups.append(Group(len(groups), [op.index]))
        op.group = groups[-1].index
    return groups


# --------------------------------------------------------------------------- 3. splits and bands
def weight_bytes(op: Op) -> int:
    g = op.geom
    if op.opcode in ("MAT.CONV", "RMAC.DW", "RMAC.PW"):
        return op.channels * (g["cin"] // g["groups"]) * g["k"] * g["k"]
    if op.opcode == "MAT.LINEAR":
        return op.channels * g["cin"]
    return 0


def _refresh(op: Op, cfg: AccelConfig) -> None:
    """Sizes that follow from the channel range: weights, parameter tables, MACs."""
    op.weight_bytes = weight_bytes(op)
    op.params = param_tables(op, cfg)
    if op.engine != "UNIT" and op.opcode not in ("MAT.ATTN_KV", "MAT.ATTN_QKV"):
        g = op.geom
        per_channel = g["oh"] * g["ow"] * (g["cin"] // g.get("groups", 1)) * g.get("k", 1) ** 2 \
            if op.opcode != "MAT.LINEAR" else g["cin"]
        g["macs"] = op.channels * per_channel


def band_options(cfg: AccelConfig, oh: int) -> list[int]:
    """Row-band counts tried for a fused group with a depthwise conv of ``oh`` output rows: bands of
    1, 2, 4, ... rows and j*L rows (its R-MAC replicas take L rows at once); one band is always tried."""
    heights = {2 ** i for i in range(12)} | {j * cfg.replicas for j in (1, 2, 3, 4, 6, 8, 16, 32)}
    return sorted({cost.cdiv(oh, r) for r in heights if r <= oh and cost.cdiv(oh, r) <= MAX_BANDS} | {1})


def _split(op_mat: Op, op_rmac: Op, frac: float, cfg: AccelConfig) -> None:
    cout = op_mat.geom["cout"]
    c = max(0, min(cout, int(round(frac * cout / cfg.rmac_cols)) * cfg.rmac_cols))
    op_mat.oc0, op_mat.oc1 = 0, cout - c
    op_rmac.oc0, op_rmac.oc1 = cout - c, cout
    _refresh(op_mat, cfg)
    _refresh(op_rmac, cfg)


def choose(program: Program, group: Group, cfg: AccelConfig, rmac_pointwise: bool = True) -> None:
    """Pick the group's band count and R-MAC share of its pointwise convs (in place)."""
    ops = [program.ops[i] for i in group.ops]
    pairs = []
    if rmac_pointwise:
        for op in ops:
            if op.opcode == "MAT.CONV" and op.geom["k"] == 1 and op.geom["groups"] == 1 and \
                    cost.rmac_pw_fits(cfg, op.geom["cin"]):
                twin = next((o for o in ops if o.opcode == "RMAC.PW" and o.node == op.node), None)
                if twin is not None:
                    pairs.append((op, twin))
    dws = [op for op in ops if op.opcode == "RMAC.DW"]
    bands = band_options(cfg, dws[0].geom["oh"]) if dws else [1]
    fracs = [0.0] + ([s / SPLIT_STEPS for s in range(1, SPLIT_STEPS + 1)] if pairs else [])
    _place_lines(program, group, cfg)
    best = None
    for nb in bands:
        for frac in fracs:
            for m, r in pairs:
                _split(m, r, frac, cfg)
            c = cost.group_price(cfg, program, group, nb)["cycles"]
            if best is None or c < best[0]:
                best = (c, nb, frac)
    _, group.bands, frac = best
    for m, r in pairs:
        _split(m, r, frac, cfg)


# --------------------------------------------------------------------------- 4. placement
def _elem(ir: dict, name: str) -> tuple[int, bool]:
    t = ir["tensors"][name]
    return int(t["bits"]), bool(t["signed"])


def make_tensors(ir: dict, graph: arch_graph.Graph, ops: list[Op]) -> dict[str, Tensor]:
    tensors: dict[str, Tensor] = {}
    shapes = dict(graph.shapes)
    for n in graph.nodes:
        if n.kind == "attention":
            nd = ir["nodes"][n.index]
            shapes[nd["kv"]] = (n.heads, n.dim, n.dim)
            shapes[nd["ks"]] = (n.heads, n.dim)
    for op in ops:
        for name in op.inputs + op.outputs:
            if name in tensors:
                continue
            bits, signed = _elem(ir, name)
            shape = tuple(int(v) for v in shapes[name])
            size = 1
            for v in shape:
                size *= v
            tensors[name] = Tensor(name, shape, bits, signed, "act", -1, size * formats.tensor_format(bits, signed).bytes,
                                   first=-1, last=-1)
    for op in ops:
        for name in op.outputs:
            if tensors[name].first < 0:
                tensors[name].first = op.index
        for name in op.inputs:
            tensors[name].last = max(tensors[name].last, op.index)
    return tensors


def _place_lines(program: Program, group: Group, cfg: AccelConfig) -> None:
    """Fused intermediates of a group stream through the line buffers (provisionally: the band check
    happens once the group's band count is known)."""
    ops = [program.ops[i] for i in group.ops]
    inside = {op.index for op in ops}
    for op in ops[:-1]:
        t = program.tensors[op.output]
        if op.engine == "UNIT" or len(t.shape) != 3 or op.opcode == "MAT.ATTN_KV":
            continue
        readers = [o for o in program.ops if op.output in o.inputs]
        writers = [o for o in program.ops if op.output in o.outputs]
        if readers and all(o.index in inside for o in readers + writers):
            nxt = readers[0]
            t.space = "line"
            t.window = (nxt.geom.get("k", 1) + nxt.geom.get("stride", 1)) if nxt.opcode == "RMAC.DW" else 1


def place(program: Program, cfg: AccelConfig, on_chip: bool = True) -> None:
    """Line tensors whose band does not fit go to DRAM; every other tensor gets activation-buffer space
    over its live range (first fit), else DRAM; the image and the logits live in DRAM.
    ``on_chip=False`` puts every tensor in DRAM (the RTL machine's executors stream operands from
    DRAM: every intermediate can then be read back and compared)."""
    T = program.tensors
    if not on_chip:
        for t in T.values():
            t.space, t.window = "dram", 0
    for g in program.groups:
        for i in g.ops[:-1]:
            t = T[program.ops[i].output]
            if t.space == "line" and band_bytes(t.shape[1], t.shape[2], t.shape[0], g.bands, t.window) > line_bytes(cfg):
                t.space = "dram"
    T[program.input].space = T[program.output].space = "dram"
    T[program.input].first, T[program.output].last = -1, len(program.ops)
    cap = act_bytes(cfg)
    live: list[tuple[int, int, int]] = []      # (addr, end, last use)
    for t in sorted((t for t in T.values() if t.space == "act"), key=lambda t: (t.first, t.name)):
        live = [a for a in live if a[2] >= t.first]
        addr, size = 0, align(t.bytes)
        for a, end, _ in sorted(live):
            if addr + size <= a:
                break
            addr = max(addr, end)
        if addr + size <= cap:
            t.addr = addr
            live.append((addr, addr + size, t.last))
        else:
            t.space = "dram"


# --------------------------------------------------------------------------- 5. DRAM layout
def layout_dram(program: Program) -> None:
    T = program.tensors
    program.program_addr = 0
    addr = program_bytes(len(program.ops))
    for name in (program.input, program.output):
        T[name].addr, addr = addr, align(addr + T[name].bytes)
    for op in program.ops:
        if op.weight_bytes:
            op.weights, addr = addr, align(addr + op.weight_bytes)
        for p in op.params:
            p.addr, addr = addr, align(addr + p.bytes)
    for t in T.values():
        if t.space == "dram" and t.name not in (program.input, program.output):
            t.addr, addr = addr, align(addr + t.bytes)
    program.dram_bytes = addr


# --------------------------------------------------------------------------- the whole compiler
def compile_ir(ir, cfg: AccelConfig, resolution: int | None = None, rmac_pointwise: bool = True,
               on_chip: bool = True) -> Program:
    """The program of ``ir`` (a path or an IR dict) on ``cfg`` (``on_chip``: see :func:`place`)."""
    ir = arch_ir.load(ir)
    arch_ir.check_formats(ir, cfg)
    graph = arch_graph.infer(ir, resolution)
    ops: list[Op] = []
    for n in graph.nodes:
        for op in node_ops(ir, n, ir["nodes"][n.index], cfg):
            ops.append(op)
            if rmac_pointwise and op.opcode == "MAT.CONV" and op.geom["k"] == 1 and op.geom["groups"] == 1 \
                    and cost.rmac_pw_fits(cfg, op.geom["cin"]):
                twin = Op(0, "RMAC.PW", op.node, 0, list(op.inputs), list(op.outputs), op.epilogue, op.oc1, op.oc1,
                          dict(op.geom), op.lo, op.hi)
                ops.append(twin)
    for i, op in enumerate(ops):
        op.index = i
        _refresh(op, cfg)
    program = Program(graph.model, graph.resolution, graph.num_classes, cfg, {}, ops, [], 0,
                      ir["graph_input"], ir["graph_output"], ir["kind"])
    program.groups = make_groups(ops)
    program.tensors = make_tensors(ir, graph, ops)
    for g in program.groups:
        choose(program, g, cfg, rmac_pointwise)
    _drop_empty(program)
    place(program, cfg, on_chip)
    layout_dram(program)
    return program


def _drop_empty(program: Program) -> None:
    """Remove operations left with no output channels (an unused R-MAC share) and renumber."""
    keep = [op for op in program.ops if op.channels > 0]
    index = {op.index: i for i, op in enumerate(keep)}
    for i, op in enumerate(keep):
        op.index = i
    for g in program.groups:
        g.ops = [index[i] for i in g.ops if i in index]
    program.ops = keep
    for t in program.tensors.values():
        t.first = min((op.index for op in keep if t.name in op.outputs), default=-1)
        t.last = max((op.index for op in keep if t.name in op.inputs), default=-1)
