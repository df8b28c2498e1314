"""Shapes, MACs and bytes of every node of an IR graph: the one walk over the network.

:func:`infer` runs through the nodes of an IR (arch/ir.py) in order and gives
each a :class:`Node` with its input and output feature-map shapes, its
reduction geometry and the MACs it performs; the compiler, the width bounds,
pysim and golden's reports all read these instead of walking a model again.

MACs are counted as the machine performs them: a convolution
``Cout Ho Wo (Cin / groups) k k``, a linear ``Cin Cout``, an attention branch
``2 H N d (d + 1)`` (``k^T [v | 1]`` then ``q [kv | ks]``: the k-sum and the
denominator are the extra column of each product).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .ir import MAC_OPS, node_inputs

# IR op -> machine kind of a MAC node (pointwise: 1x1, groups 1; generic: k x k, groups 1)
MAC_KINDS = {"pointwise": "pw", "depthwise": "dw", "grouped": "grouped", "linear": "linear"}


@dataclass
class Node:
    index: int
    name: str
    op: str                  # the IR op
    kind: str                # conv | pw | dw | grouped | linear | attention | add | avgpool | layernorm
    inputs: list[str]
    output: str
    cin: int = 0
    cout: int = 0            # output channels this node writes (an attention branch: heads * dim)
    h: int = 1               # input height / width
    w: int = 1
    oh: int = 1              # output height / width
    ow: int = 1
    k: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    heads: int = 0
    dim: int = 0
    act: str | None = None
    macs: int = 0
    weights: int = 0         # weight codes
    extra: dict = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.h * self.w

    @property
    def pixels(self) -> int:
        return self.oh * self.ow

    @property
    def is_mac(self) -> bool:
        return self.op in MAC_OPS

    @property
    def out_elements(self) -> int:
        return self.cout * self.oh * self.ow

    def shape(self) -> str:
        """A short human-readable shape, for tables."""
        if self.kind == "attention":
            return f"{self.heads}h x {self.tokens}tok x d{self.dim}"
        if self.kind == "linear":
            return f"{self.cin}->{self.cout}"
        if self.kind in ("conv", "pw", "dw", "grouped"):
            g = f" g{self.groups}" if self.groups > 1 and self.kind != "dw" else ""
            return f"{self.cin}->{self.cout} {self.k}x{self.k}/s{self.stride} @{self.oh}x{self.ow}{g}"
        return f"{self.cout}x{self.oh}x{self.ow}"


@dataclass
class Graph:
    model: str
    resolution: int
    num_classes: int
    nodes: list[Node]
    shapes: dict[str, tuple]      # tensor -> (C, H, W) or (C,)

    @property
    def macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r} in the graph of {self.model}")

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]


def _sq(v, what: str) -> int:
    if isinstance(v, (tuple, list)):
        if len(set(int(x) for x in v)) != 1:
            raise ValueError(f"{what}: non-square stride/padding {tuple(v)} is not supported")
        v = v[0]
    return int(v)


def _channels(ir: dict, tensor: str, fallback: int | None = None) -> int:
    c = ir["tensors"][tensor].get("channels")
    if c is None:
        if fallback is None:
            raise ValueError(f"tensor {tensor!r} has no `channels` entry")
        return fallback
    return int(c)


def infer(ir: dict, resolution: int | None = None) -> Graph:
    """Shapes and MACs of every node of ``ir`` (a dict from :func:`arch.ir.load`)."""
    res = int(resolution or ir["input_size"])
    shapes: dict[str, tuple] = {ir["graph_input"]: (_channels(ir, ir["graph_input"], 3), res, res)}
    nodes: list[Node] = []
    for i, nd in enumerate(ir["nodes"]):
        op, name = nd["op"], nd["name"]
        ins = node_inputs(nd)
        for t in ins:
            if t not in shapes:
                raise ValueError(f"node {i} ({name!r}) reads tensor {t!r} before any node writes it")
        x = shapes[ins[0]]
        n = Node(i, name, op, op, ins, nd["output"], act=nd.get("act"))
        if op in MAC_OPS:
            ws = tuple(int(v) for v in nd["weight_shape"])
            n.weights = 1
            for v in ws:
                n.weights *= v
            if op == "linear":
                cout, cin = ws
                if x[0] != cin:
                    raise ValueError(f"{name}: linear of {cin} inputs reads a tensor of {x[0]} features")
                n.kind, n.cin, n.cout, n.macs = "linear", cin, cout, cin * cout
                shapes[n.output] = (cout,)
            else:
                cout, cin_g, kh, kw = ws
                if kh != kw:
                    raise ValueError(f"{name}: non-square kernel {kh}x{kw} is not supported")
                n.groups, n.k = int(nd["groups"]), kh
                n.stride, n.padding = _sq(nd["stride"], name), _sq(nd["padding"], name)
                n.cin, n.cout, (_, n.h, n.w) = x[0], cout, x
                if n.cin != cin_g * n.groups:
                    raise ValueError(f"{name}: weights {ws} with groups={n.groups} need {cin_g * n.groups} input "
                                     f"channels, the input has {n.cin}")
                n.oh = (n.h + 2 * n.padding - kh) // n.stride + 1
                n.ow = (n.w + 2 * n.padding - kw) // n.stride + 1
                n.kind = MAC_KINDS.get(op, "conv")
                n.macs = cout * n.oh * n.ow * cin_g * kh * kw
                shapes[n.output] = (cout, n.oh, n.ow)
        elif op == "add":
            a, b = (shapes[t] for t in ins)
            if a != b:
                raise ValueError(f"{name}: adds tensors of shapes {a} and {b}")
            n.cin = n.cout = a[0]
            (_, n.h, n.w), (n.oh, n.ow) = a, a[1:]
            shapes[n.output] = a
        elif op == "attention":
            H, d = int(nd["heads"]), int(nd["dim"])
            if x[0] != 3 * H * d:
                raise ValueError(f"{name}: {H} heads of dim {d} need {3 * H * d} q/k/v channels, the input has {x[0]}")
            n.heads, n.dim, n.cin, n.cout = H, d, x[0], H * d
            (_, n.h, n.w), (n.oh, n.ow) = x, x[1:]
            n.macs = 2 * H * n.tokens * d * (d + 1)
            n.extra["out_channel_offset"] = int(nd["out_channel_offset"])
            total = _channels(ir, n.output, 2 * H * d)
            shapes[n.output] = (total, n.h, n.w)
        elif op == "avgpool":
            n.cin = n.cout = x[0]
            (_, n.h, n.w) = x
            shapes[n.output] = (x[0],)
        elif op == "layernorm_hswish":
            n.kind = "layernorm"
            n.cin = n.cout = x[0]
            shapes[n.output] = (x[0],)
        else:
            raise ValueError(f"node {i} ({name!r}): unknown op {op!r}")
        nodes.append(n)
    return Graph(str(ir["model"]), res, int(ir["num_classes"]), nodes, shapes)
