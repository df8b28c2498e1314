"""golden/ as the functional executor of the machine program (arch/program.py).

:func:`dram_image` lays the integer model's weights and parameter tables out
as the program says (every table at its address, in its element format);
:func:`run` then executes the program from that DRAM image and the input
pixels alone, operation by operation, with the same golden.ops calls as the
integer model (golden/execute.py), on a memory model of the machine (DRAM, the
activation buffer, the line buffers).  Its logits must equal
``execute.run``'s bit for bit; :func:`check` says where they first differ.

What this checks of the program: that its binary form (arch/encoding.py) carries
everything the machine needs (:func:`check` decodes the program from the DRAM
image and runs that), every address, size and element format, the split of a
layer between the engines (``oc0 .. oc1``), placement and live ranges (a
tensor overwritten while still live would corrupt a later read).
"""
from __future__ import annotations

import numpy as np

from arch import encoding, formats
from arch.memory import act_bytes
from arch.program import Op, Program, Tensor

from . import execute
from .vectors import Recorder


# --------------------------------------------------------------------------- parameter values
def _vec(v, n: int) -> np.ndarray:
    """A scalar or per-channel parameter as ``n`` values."""
    a = np.asarray(v, dtype=np.int64).reshape(-1)
    return np.broadcast_to(a, (n,)) if a.size == 1 else a


def param_values(op: Op, node: dict) -> dict[str, np.ndarray]:
    """The values of every parameter table of ``op`` from its integer-model node (golden/convert.py)."""
    c0, c1, cout = op.oc0, op.oc1, op.geom.get("cout", op.oc1)
    cin = op.geom.get("cin", 0)
    ch = lambda v: _vec(v, cout)[c0:c1]     # noqa: E731 - per output channel, this op's range
    e = op.epilogue
    if e in ("requant", "hswish", "logits"):
        v = dict(bias=node["bias"][c0:c1], z_x=_vec(node["z_x"], cin))
        if e == "requant":
            rq = node["requant"]
            v.update(M=ch(rq["M"]), n=ch(rq["n"]), z_out=ch(rq["z_out"]))
        elif e == "logits":
            lg = node["logits"]
            v.update(M=ch(lg["M"]), n=ch(lg["n"]))
        else:
            pre, hs = node["pre"], node["hswish"]
            v.update(pre_M=ch(pre["M"]), pre_n=ch(pre["n"]), pre_z=ch(pre["z"]), t3=ch(hs["t3"]),
                     z_p=ch(hs["z_p"]), M=ch(hs["M"]), n=ch(hs["n"]), z_out=ch(hs["z_out"]))
        return v
    if e == "kv":
        return dict(z_k=node["z_k"], z_v=node["z_v"], M_kv=node["M_kv"], n_kv=node["n_kv"], M_ks=node["M_ks"],
                    n_ks=node["n_ks"])
    if e == "divide":
        half = {k: node[k] for k in ("M_o1", "n_o1") if node.get("frac_bits", 0)}
        return dict(z_q=node["z_q"], M_o=node["M_o"], n_o=node["n_o"], e_lo=node["e_lo"], z_out=node["z_out"], **half)
    if e == "add":
        return {k: ch(node[k]) for k in ("z_a", "z_b", "Ma", "Mb", "n", "z_out")}
    if e == "pool":
        return {k: node[k] for k in ("z_x", "M", "n", "z_out")}
    if e == "lnorm":
        return dict(z_x=node["z_x"], eps_int=node["eps_int"], G=node["G"], B=node["B"], n_g=node["n_g"],
                    z_pre=ch(node["z_pre"]), t3=ch(node["t3"]), M=ch(node["M"]), n=ch(node["n"]),
                    z_out=node["z_out"])
    raise ValueError(f"op {op.index}: no parameter tables for epilogue {e!r}")


def _nodes_by_name(model: dict) -> dict[str, dict]:
    return {n["name"]: n for n in model["nodes"]}


# --------------------------------------------------------------------------- the DRAM image
def _store(mem: np.ndarray, addr: int, values, fmt: formats.IntFormat, what: str) -> None:
    raw = fmt.pack(values, what)
    mem[addr:addr + raw.size] = raw


def _load(mem: np.ndarray, addr: int, count: int, fmt: formats.IntFormat) -> np.ndarray:
    return fmt.unpack(mem[addr:addr + count * fmt.numpy_dtype.itemsize], count)


def dram_image(program: Program, model: dict) -> np.ndarray:
    """The DRAM image of ``program`` with the weights and parameters of the integer ``model``, and the
    program itself in binary at its address."""
    F = formats.formats(program.config)
    mem = np.zeros(program.dram_bytes, np.uint8)
    binary = np.frombuffer(encoding.encode(program), np.uint8)
    mem[program.program_addr:program.program_addr + binary.size] = binary
    nodes = _nodes_by_name(model)
    for op in program.ops:
        node = nodes.get(op.node)
        if node is None:
            raise ValueError(f"op {op.index} executes node {op.node!r}, which the integer model lacks: the program "
                             "was compiled from another quantized.pt")
        if op.weight_bytes:
            w = np.asarray(node["w"])[op.oc0:op.oc1]
            if w.size != op.weight_bytes:
                raise ValueError(f"op {op.index} ({op.node}): {op.weight_bytes} weight bytes in the program, "
                                 f"{w.size} in the model")
            _store(mem, op.weights, w, formats.weight(op.geom["w_bits"]), f"{op.node} weights")
        vals = param_values(op, node)
        for p in op.params:
            v = np.asarray(vals[p.name], dtype=np.int64).reshape(-1)
            if v.size != p.count:
                raise ValueError(f"op {op.index} ({op.node}) table {p.name}: {p.count} entries in the program, "
                                 f"{v.size} in the model")
            _store(mem, p.addr, v, getattr(F, p.fmt), f"{op.node} {p.name}")
    return mem


# --------------------------------------------------------------------------- the memory model
class Memory:
    """DRAM, the activation buffer and the line buffers, holding codes in each tensor's element format."""

    def __init__(self, program: Program, dram: np.ndarray):
        self.program = program
        self.dram = np.array(dram, dtype=np.uint8, copy=True)
        self.act = np.zeros(act_bytes(program.config), np.uint8)
        self.line: dict[str, np.ndarray] = {}

    def _space(self, t: Tensor) -> np.ndarray:
        return self.dram if t.space == "dram" else self.act

    def read(self, name: str) -> np.ndarray:
        t = self.program.tensors[name]
        if t.space == "line":
            if name not in self.line:
                raise ValueError(f"line tensor {name!r} is read before it is written")
            return self.line[name]
        n = int(np.prod(t.shape))
        return _load(self._space(t), t.addr, n, formats.tensor_format(t.bits, t.signed)).reshape(t.shape)

    def write(self, name: str, value: np.ndarray, channels: slice | None = None) -> None:
        t = self.program.tensors[name]
        value = np.asarray(value, dtype=np.int64)
        if channels is not None:
            full = self.read(name) if (t.space != "line" or name in self.line) else np.zeros(t.shape, np.int64)
            full = full.copy()
            full[channels] = value
            value = full
        if value.shape != t.shape:
            raise ValueError(f"tensor {name!r}: writing shape {value.shape} into {t.shape}")
        if t.space == "line":
            self.line[name] = value
            return
        _store(self._space(t), t.addr, value, formats.tensor_format(t.bits, t.signed), f"tensor {name}")


# --------------------------------------------------------------------------- execution
def _table(mem: Memory, op: Op) -> dict[str, np.ndarray]:
    F = formats.formats(mem.program.config)
    return {p.name: _load(mem.dram, p.addr, p.count, getattr(F, p.fmt)) for p in op.params}


def _scalar_if_uniform(v: np.ndarray):
    return v[0] if v.size and np.all(v == v[0]) else v


def mac_node(op: Op, p: dict, mem: Memory) -> dict:
    """An integer-model MAC node rebuilt from the program and the DRAM image alone."""
    g = op.geom
    if op.opcode == "MAT.LINEAR":
        shape = (op.channels, g["cin"])
    else:
        shape = (op.channels, g["cin"] // g["groups"], g["k"], g["k"])
    w = _load(mem.dram, op.weights, op.weight_bytes, formats.weight(g["w_bits"])).reshape(shape)
    node = dict(op="linear" if op.opcode == "MAT.LINEAR" else "conv", name=op.node, w=w, bias=p["bias"],
                z_x=_scalar_if_uniform(p["z_x"]), x_bits=g["x_bits"], w_bits=g["w_bits"])
    if op.opcode != "MAT.LINEAR":
        node.update(stride=g["stride"], padding=g["pad"], groups=g["groups"])
    if op.epilogue == "requant":
        node["requant"] = dict(M=p["M"], n=p["n"], z_out=p["z_out"], lo=op.lo, hi=op.hi)
    elif op.epilogue == "logits":
        node["logits"] = dict(M=p["M"], n=p["n"], bits=mem.program.tensors[op.output].bits)
    else:
        node["pre"] = dict(M=p["pre_M"], n=p["pre_n"], z=p["pre_z"], lo=g["pre_lo"], hi=g["pre_hi"])
        node["hswish"] = dict(t3=p["t3"], z_p=p["z_p"], M=p["M"], n=p["n"], z_out=p["z_out"], lo=op.lo, hi=op.hi)
    return node


def _attention_node(op: Op, p: dict) -> dict:
    g = op.geom
    H, d = g["heads"], g["dim"]
    node = dict(name=op.node, heads=H, dim=d, kv_bits=g["kv_bits"], code_bits=g["code_bits"], lo=op.lo, hi=op.hi)
    if op.epilogue == "kv":
        node.update(z_k=p["z_k"][0], z_v=p["z_v"][0], M_kv=p["M_kv"].reshape(H, 1, d),
                    n_kv=p["n_kv"].reshape(H, 1, d), M_ks=p["M_ks"].reshape(H, 1), n_ks=p["n_ks"].reshape(H, 1))
    else:
        node.update(z_q=p["z_q"][0], M_o=p["M_o"].reshape(H, 1, d), n_o=p["n_o"].reshape(H, 1, d),
                    e_lo=p["e_lo"][0], z_out=p["z_out"][0], frac_bits=g.get("div_frac", 0))
        if g.get("div_frac", 0):
            node.update(M_o1=p["M_o1"].reshape(H, 1, d), n_o1=p["n_o1"].reshape(H, 1, d))
    return node


def step(op: Op, mem: Memory, rec: Recorder, st: execute.Stats) -> None:
    """Execute one operation of the program on the memory model."""
    p = _table(mem, op)
    ins = [mem.read(t)[None] for t in op.inputs]          # a batch of one image
    chans = slice(op.oc0, op.oc1)
    if op.opcode in ("MAT.CONV", "MAT.LINEAR", "RMAC.DW", "RMAC.PW"):
        mem.write(op.output, execute.run_mac(mac_node(op, p, mem), ins[0], rec, st)[0], chans)
    elif op.opcode == "MAT.ATTN_KV":
        kv, ks = execute.attention_kv_half(_attention_node(op, p), ins[0], rec, st)
        mem.write(op.outputs[0], kv[0])
        mem.write(op.outputs[1], ks[0])
    elif op.opcode == "MAT.ATTN_QKV":
        out = execute.attention_qkv_half(_attention_node(op, p), ins[0], ins[1], ins[2], rec, st)
        o = op.geom["out_offset"]
        mem.write(op.output, out[0], slice(o + op.oc0, o + op.oc1))
    elif op.opcode == "UNIT.ADD":
        node = dict(name=op.node, lo=op.lo, hi=op.hi, **{k: _scalar_if_uniform(v) for k, v in p.items()})
        mem.write(op.output, execute.run_add(node, ins[0], ins[1], rec)[0])
    elif op.opcode == "UNIT.POOL":
        node = dict(name=op.node, lo=op.lo, hi=op.hi, **{k: v[0] for k, v in p.items()})
        mem.write(op.output, execute.run_pool(node, ins[0], rec, st)[0])
    elif op.opcode == "UNIT.LNORM":
        g = op.geom
        node = dict(name=op.node, lo=op.lo, hi=op.hi, pre_lo=g["pre_lo"], pre_hi=g["pre_hi"],
                    frac_bits=g["frac_bits"], recip_bits=g["recip_bits"], z_x=p["z_x"][0], eps_int=p["eps_int"][0],
                    G=p["G"], B=p["B"], n_g=p["n_g"], z_pre=_scalar_if_uniform(p["z_pre"]), t3=p["t3"], M=p["M"],
                    n=p["n"], z_out=p["z_out"][0])
        mem.write(op.output, execute.run_layernorm(node, ins[0], rec)[0])
    else:
        raise ValueError(f"op {op.index}: unknown opcode {op.opcode!r}")


def run(program: Program, dram: np.ndarray, pixels: np.ndarray, rec: Recorder | None = None,
        stats: execute.Stats | None = None, trace=None) -> np.ndarray:
    """Logits (1, classes) of one uint8 image (3, H, W), computed from the program and its DRAM image.

    ``trace(op, mem)`` is called after every operation (to compare intermediate tensors)."""
    px = np.asarray(pixels)
    t_in = program.tensors[program.input]
    if px.dtype != np.uint8 or px.shape != t_in.shape:
        raise ValueError(f"the program takes one uint8 image of shape {t_in.shape}, got {px.dtype} {px.shape}")
    mem = Memory(program, dram)
    mem.write(program.input, px)
    rec = rec if rec is not None else Recorder(layers=())
    st = stats if stats is not None else execute.Stats()
    for op in program.ops:
        step(op, mem, rec, st)
        if trace is not None:
            trace(op, mem)
    return mem.read(program.output)[None]


def check(program: Program, model: dict, pixels: np.ndarray, dram: np.ndarray | None = None) -> dict:
    """Decode the binary program from the DRAM image (``dram``, default: the image :func:`dram_image`
    lays out) and run it as the machine would, from those bytes alone; run the integer model on the
    same image; name the first operation whose output differs."""
    env = execute.run(model, pixels, keep=True)
    dram = dram_image(program, model) if dram is None else dram
    decoded = encoding.decode(dram, program.program_addr, program.config)
    first_bad: list = []

    def trace(dop: Op, mem: Memory):
        if first_bad:
            return
        op = program.ops[dop.index]
        for name, dname in zip(op.outputs, dop.outputs):
            ref = env.get(name)
            if ref is None or program.tensors[name].shape != tuple(ref.shape[1:]):
                continue                      # kv / k-sum live inside the integer model's attention node
            got = mem.read(dname)
            sl = (slice(op.oc0 + op.geom.get("out_offset", 0), op.oc1 + op.geom.get("out_offset", 0)),) \
                if op.opcode == "MAT.ATTN_QKV" else (slice(op.oc0, op.oc1),) if len(got.shape) else ()
            if not np.array_equal(got[sl], ref[0][sl]):
                first_bad.append(dict(op=op.index, opcode=op.opcode, node=op.node, tensor=name,
                                      mismatches=int((got[sl] != ref[0][sl]).sum())))

    st = execute.Stats()
    logits = run(decoded, dram, pixels, stats=st, trace=trace)
    ref = env[model["graph_output"]]
    return dict(bit_exact=bool(np.array_equal(logits, ref)) and not first_bad, logits=logits[0].tolist(),
                reference=ref[0].tolist(), first_difference=first_bad[0] if first_bad else None, macs=st.macs)
