"""The machine program: what the accelerator executes, in order, with every address.

The compiler (arch/compiler.py) turns an IR and a configuration into a
:class:`Program`; golden/ executes it (golden/program.py: the same bits as the
IR), pysim/ prices it (one arch/cost.py function per operation) and the RTL
top level will run it.  docs/program_format.md documents every field.

A program holds

* ``tensors``: every stored tensor with its shape, element format and
  placement: ``act`` (the on-chip activation buffer, at ``addr``), ``line``
  (a fused intermediate that streams between two engines band by band and is
  never stored whole) or ``dram`` (at ``addr`` in the DRAM image);
* ``dram``: the layout of the DRAM image: the program itself in binary
  (arch/encoding.py), the input image, the logits, each operation's weights
  and parameter tables, and the tensors placed there;
* ``ops``: the machine operations in issue order.  Each names its engine and
  opcode, the IR node it comes from, its operand tensors, the output channel
  range it computes (``oc0 .. oc1``: a layer split between the two engines is
  two operations), its geometry, its epilogue unit (requantization,
  hardswish, ...), the code range it clamps to, and the DRAM addresses of its
  weights and of each parameter table;
* ``groups``: runs of operations that stream into each other on chip (an
  MBConv's expand -> depthwise -> project -> residual add), each with the
  number of row ``bands`` the intra-layer pipeline cuts it into.

The parameter tables' contents are integers only golden/ derives (golden/
convert.py); the program fixes their names, element formats, lengths and
addresses (:data:`PARAMS`), so a host can build the DRAM image from it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import AccelConfig
from .formats import formats

FORMAT = "triovit-program"
VERSION = 1
ALIGN = 64                      # DRAM segments start on 64-byte boundaries (one AXI burst beat of 512 bits)

# opcode -> engine
OPCODES = {
    "MAT.CONV": "MAT",          # generic / pointwise / grouped convolution (im2col'd reduction)
    "MAT.LINEAR": "MAT",        # a vector times a matrix (the head)
    "MAT.ATTN_KV": "MAT",       # k^T [v | 1] of every head, then the kv / k-sum requantization
    "MAT.ATTN_QKV": "MAT",      # q [kv | ks] of every head, then the log2 divisor and the shift division
    "RMAC.DW": "RMAC",          # depthwise convolution
    "RMAC.PW": "RMAC",          # pointwise convolution on the R-MAC array (a share of the output channels)
    "UNIT.ADD": "UNIT",         # residual add of two tensors
    "UNIT.POOL": "UNIT",        # global average pool
    "UNIT.LNORM": "UNIT",       # LayerNorm, then hardswish
}
ENGINES = ("MAT", "RMAC", "UNIT")

# Parameter tables of each epilogue / unit: (name, format field of arch.formats.Formats, length).
# Lengths: "C" the operation's output channels (oc1 - oc0), "CIN" its input channels, "HD" heads x dim,
# "H" heads, "HDF" heads x dim where the divisor has a mantissa bit (geometry div_frac, else 0), 1 a scalar.  golden/program.py fills them from the integer model's fields of the same name.
PARAMS = {
    "requant": [("bias", "acc", "C"), ("z_x", "zero_point", "CIN"), ("M", "mult", "C"), ("n", "shift", "C"),
                ("z_out", "zero_point", "C")],
    "hswish": [("bias", "acc", "C"), ("z_x", "zero_point", "CIN"), ("pre_M", "mult", "C"), ("pre_n", "shift", "C"),
               ("pre_z", "zero_point", "C"), ("t3", "t3", "C"), ("z_p", "zero_point", "C"), ("M", "mult", "C"),
               ("n", "shift", "C"), ("z_out", "zero_point", "C")],
    "logits": [("bias", "acc", "C"), ("z_x", "zero_point", "CIN"), ("M", "mult", "C"), ("n", "shift", "C")],
    "kv": [("z_k", "zero_point", 1), ("z_v", "zero_point", 1), ("M_kv", "mult", "HD"), ("n_kv", "shift", "HD"),
           ("M_ks", "mult", "H"), ("n_ks", "shift", "H")],
    "divide": [("z_q", "zero_point", 1), ("M_o", "mult", "HD"), ("n_o", "shift", "HD"), ("e_lo", "zero_point", 1),
               ("z_out", "zero_point", 1), ("M_o1", "mult", "HDF"), ("n_o1", "shift", "HDF")],
    "add": [("z_a", "zero_point", "C"), ("z_b", "zero_point", "C"), ("Ma", "mult", "C"), ("Mb", "mult", "C"),
            ("n", "shift", "C"), ("z_out", "zero_point", "C")],
    "pool": [("z_x", "zero_point", 1), ("M", "mult", 1), ("n", "shift", 1), ("z_out", "zero_point", 1)],
    "lnorm": [("z_x", "zero_point", 1), ("eps_int", "ln_eps", 1), ("G", "ln_g", "C"), ("B", "ln_b", "C"),
              ("n_g", "shift", "C"), ("z_pre", "zero_point", "C"), ("t3", "t3", "C"), ("M", "mult", "C"),
              ("n", "shift", "C"), ("z_out", "zero_point", 1)],
}


@dataclass
class Tensor:
    name: str
    shape: tuple            # (C, H, W), (C,), kv (H, d, d), ks (H, d)
    bits: int
    signed: bool
    space: str              # act | line | dram
    addr: int = -1          # byte address in its space (-1 for line)
    bytes: int = 0
    first: int = 0          # index of the op that writes it (-1: the host)
    last: int = 0           # index of the last op that reads it (len(ops): the host)
    window: int = 0         # line tensors: rows the consumer's window reaches past a band


@dataclass
class Param:
    name: str
    fmt: str                # a field of arch.formats.Formats (element format)
    count: int
    addr: int               # in the DRAM image
    bytes: int


@dataclass
class Op:
    index: int
    opcode: str
    node: str               # the IR node it executes (part of)
    group: int
    inputs: list            # tensor names
    outputs: list           # tensor names (ATTN_KV writes kv and the k-sum)
    epilogue: str           # a key of PARAMS, or "" (none)
    oc0: int = 0            # output channels [oc0, oc1) of the node this op computes
    oc1: int = 0
    geom: dict = field(default_factory=dict)   # ints: cin, h, w, oh, ow, k, stride, pad, groups, heads, dim, ...
    lo: int = 0             # code range the epilogue clamps to
    hi: int = 0
    weights: int = -1       # DRAM address of the int8 weights (-1: none)
    weight_bytes: int = 0
    params: list = field(default_factory=list)  # of Param

    @property
    def engine(self) -> str:
        return OPCODES[self.opcode]

    @property
    def output(self) -> str:
        return self.outputs[0]

    @property
    def channels(self) -> int:
        return self.oc1 - self.oc0

    @property
    def param_bytes(self) -> int:
        return sum(p.bytes for p in self.params)

    @property
    def param_span(self) -> int:
        """Bytes of the parameter block as laid out: first table's start to the last one's end (the
        tables' alignment padding included); what the machine reads in one go."""
        if not self.params:
            return 0
        return self.params[-1].addr + self.params[-1].bytes - self.params[0].addr

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"op {self.index} ({self.opcode} {self.node}) has no parameter table {name!r}")


@dataclass
class Group:
    index: int
    ops: list               # op indices
    bands: int = 1          # row bands of the intra-layer pipeline (1: none)


def param_tables(op: Op, cfg: AccelConfig) -> list[Param]:
    """The operation's parameter tables (no addresses yet): lengths from its shape, formats from cfg."""
    F = formats(cfg)
    g = op.geom
    hd = g.get("heads", 0) * g.get("dim", 0)
    sizes = {"C": op.channels, "CIN": g.get("cin", 0), "HD": hd, "H": g.get("heads", 0),
             "HDF": hd if g.get("div_frac", 0) else 0, 1: 1}
    out = []
    for name, fmt, count in PARAMS.get(op.epilogue, []):
        n = sizes[count]
        if count == "HDF" and not n:        # no mantissa-bit rows: the block is laid out as without them
            continue
        out.append(Param(name, fmt, n, -1, n * getattr(F, fmt).numpy_dtype.itemsize))
    return out


@dataclass
class Program:
    model: str
    resolution: int
    num_classes: int
    config: AccelConfig
    tensors: dict           # name -> Tensor
    ops: list               # of Op
    groups: list            # of Group
    dram_bytes: int         # size of the DRAM image
    input: str              # tensor names of the image and of the logits
    output: str
    ir_kind: str = "quantized"
    program_addr: int = 0   # where the binary program (arch/encoding.py) lies in the DRAM image

    @property
    def macs(self) -> int:
        return sum(op.geom.get("macs", 0) for op in self.ops)

    def op_group(self, op: Op) -> Group:
        return self.groups[op.group]

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dict(format=FORMAT, version=VERSION, model=self.model, resolution=self.resolution,
                    num_classes=self.num_classes, ir_kind=self.ir_kind, config=self.config.to_dict(),
                    input=self.input, output=self.output, dram_bytes=self.dram_bytes,
                    program_addr=self.program_addr,
                    tensors={k: asdict(t) for k, t in self.tensors.items()},
                    groups=[asdict(g) for g in self.groups],
                    ops=[asdict(o) for o in self.ops])

    @classmethod
    def from_dict(cls, d: dict) -> "Program":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} (format field: {d.get('format') if isinstance(d, dict) else None!r})")
        if d.get("version") != VERSION:
            raise ValueError(f"program format version {d.get('version')!r}; this reader understands {VERSION}: "
                             "recompile it (python -m pysim --quantized Q --program OUT.json)")
        for key in ("model", "resolution", "num_classes", "config", "tensors", "ops", "groups", "dram_bytes",
                    "input", "output"):
            if key not in d:
                raise ValueError(f"program lacks the field {key!r} (docs/program_format.md)")
        ops = []
        for o in d["ops"]:
            o = dict(o, params=[Param(**p) for p in o["params"]])
            if o["opcode"] not in OPCODES:
                raise ValueError(f"op {o.get('index')}: unknown opcode {o['opcode']!r}")
            ops.append(Op(**o))
        return cls(model=d["model"], resolution=d["resolution"], num_classes=d["num_classes"],
                   config=AccelConfig.from_dict(d["config"]),
                   tensors={k: Tensor(**dict(t, shape=tuple(t["shape"]))) for k, t in d["tensors"].items()},
                   ops=ops, groups=[Group(**g) for g in d["groups"]], dram_bytes=d["dram_bytes"],
                   input=d["input"], output=d["output"], ir_kind=d.get("ir_kind", "quantized"),
                   program_addr=d.get("program_addr", 0))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Program":
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found; write a program with `python -m pysim --quantized Q "
                                    f"--preset NAME --program {p}`")
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{p} is not a program (JSON error: {e})") from None
        return cls.from_dict(d)

    # ---- the printable form --------------------------------------------------------------
    def listing(self, cycles: dict | None = None) -> str:
        """One line per operation (and a header per group): what a person reads to follow the program.

        ``cycles``: op index -> cycles, printed when given (pysim's prices)."""
        cfg = self.config
        out = [f"; {FORMAT} v{VERSION}: {self.model} at {self.resolution}x{self.resolution}, preset {cfg.name} "
               f"(MAT {cfg.mat_lanes}x{cfg.mat_mults} + R-MAC {cfg.rmac_rows}x{cfg.rmac_cols}, x{cfg.replicas})",
               f"; {len(self.ops)} operations in {len(self.groups)} groups, {self.macs:,} MACs, "
               f"DRAM image {self.dram_bytes:,} bytes"]
        for g in self.groups:
            out.append(f"group {g.index}: bands {g.bands}")
            for i in g.ops:
                op = self.ops[i]
                ins = ",".join(_where(self.tensors[t]) for t in op.inputs)
                geo = " ".join(f"{k}={v}" for k, v in op.geom.items() if k != "macs")
                w = f" w=dram@{op.weights:#x}+{op.weight_bytes}" if op.weights >= 0 else ""
                p = f" p=dram@{op.params[0].addr:#x}+{op.param_bytes}" if op.params else ""
                c = f" ; {cycles[i]:,} cyc" if cycles and i in cycles else ""
                out.append(f"  {i:04d} {op.opcode:13s} {op.node:40s} oc[{op.oc0}:{op.oc1}] {geo} in={ins} "
                           f"out={_where(self.tensors[op.output])} epi={op.epilogue or '-'} "
                           f"clamp[{op.lo},{op.hi}]{w}{p}{c}")
        return "\n".join(out)


def _where(t: Tensor) -> str:
    return f"{t.space}@{t.addr:#x}" if t.space != "line" else "line"


def align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN
