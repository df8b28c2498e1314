"""The real-valued semantics of the IR, executed in float64: the fake-quant reference of golden eval.

docs/quantized_format.md defines what every node means with real numbers:
``y = conv(x_real, w_real) + bias``, ``Q(x) = clamp(round(x / s) + z, lo, hi)``
on each stored tensor, the hardswish with the snapped knee, the log2 divisor.
This module runs exactly that on the codes of the IR (weights pinned to the
exported codes, the exported hardware bias), in float64 so that float noise
does not flip rounding ties, and returns the codes of every stored tensor.
The integer model (golden/convert.py) approximates it with integer
multipliers; quant/'s fake-quant model computes the same definition in float32
(tests hold the two references together).  Nothing here imports quant/.
"""
from __future__ import annotations

import numpy as np

from arch import formats
from arch import ir as arch_ir


def log2_divisor(d_int, e_lo: float, code_bits: int, frac: int = 0):
    """The quantized divisor of SPEC 5.4 in units of ``s_q s_ks``, real-valued (torch, any float dtype):
    the step of ``LOG2_STEPS[frac]`` 2^e nearest ``d_int`` (the integer divisor) in log2, within the code
    window from ``2^e_lo``; 0 gives ``2^e_lo``. Returns ``(divisor, e)`` (``e`` the exponent)."""
    import torch
    steps = formats.LOG2_STEPS[frac]
    m = len(steps)
    x = d_int.clamp(min=1)
    p = torch.floor(torch.log2(x))
    h = p * m
    for k in range(m):                      # the thresholds: geometric means of neighbouring steps
        nxt = float(steps[k + 1]) if k + 1 < m else 2.0
        h = h + (x >= torch.exp2(p) * (float(steps[k]) * nxt) ** 0.5).to(x.dtype)
    lo = float(e_lo) * m
    h = torch.where(d_int > 0, h, torch.full_like(h, lo)).clamp(lo, lo + m * 2 ** code_bits - 1)
    e = torch.floor(h / m)
    mant = torch.tensor([float(s) for s in steps], dtype=x.dtype)[(h - e * m).long()]
    return torch.exp2(e) * mant, e


class Reference:
    """``Reference(ir)(pixels)`` -> int16 logit codes ``(N, classes)`` of uint8 images ``(N, 3, H, W)``."""

    def __init__(self, ir):
        import torch
        self.torch = torch
        self.ir = arch_ir.load(ir)
        if self.ir["kind"] != "quantized":
            raise ValueError(f"{self.ir['model']}: a {self.ir['kind']} IR has no quantization to emulate")
        self.T = self.ir["tensors"]

    # ---- tensors: codes <-> real --------------------------------------------------------
    def _sz(self, name: str, x):
        """Scale and zero point of tensor ``name`` shaped to broadcast against ``x`` (channel axis 1)."""
        torch, e = self.torch, self.T[name]
        s = torch.as_tensor(np.abs(np.asarray(e["scale"], np.float64)))
        z = torch.as_tensor(np.asarray(e["zero_point"], np.float64))
        if s.ndim == 2:                                       # kv: (H, d) per head and column
            return s.view(1, *s.shape[:1], 1, s.shape[1]), z.view(1, *z.shape[:1], 1, z.shape[1])
        if s.ndim == 1 and s.numel() > 1 and x.ndim == 3:     # ks: (H,) per head on (B, H, d)
            return s.view(1, -1, 1), z.view(1, -1, 1)
        shape = [1] * x.ndim
        if s.numel() > 1:
            shape[1] = s.numel()
        return s.reshape(shape), z.reshape(shape)

    def quantize(self, name: str, x):
        """Q of tensor ``name``: the codes of ``x`` (round half to even, as torch.round, then clamp)."""
        f = arch_ir.tensor_format(self.ir, name)
        s, z = self._sz(name, x)
        return (self.torch.round(x / s) + z).clamp(f.lo, f.hi)

    def real(self, name: str, q):
        s, z = self._sz(name, q)
        return s * (q - z)

    # ---- nodes ---------------------------------------------------------------------------
    def _hswish_knee(self, pre: str, p_codes):
        """x clamp(x + t, 0, 2t) / 2t with the knee t = s_pre max(1, round_half_up(3 / s_pre)) (SPEC 3)."""
        torch = self.torch
        s, _ = self._sz(pre, p_codes)
        t = torch.clamp(torch.floor(3.0 / s + 0.5), min=1.0) * s
        x = self.real(pre, p_codes)
        return x * torch.clamp(x + t, torch.zeros_like(t), 2 * t) / (2 * t)

    def _bias_on_grid(self, node, s_w: np.ndarray) -> np.ndarray:
        """The exported bias snapped to its accumulator grid s_x s_w[c] in float64: quantized.pt stores it
        rounded to float32, whose last bits would otherwise flip rounding ties the integer model never
        sees (it takes round(bias / (s_x s_w)) as an exact integer)."""
        b = np.asarray(node["bias"], np.float64).reshape(-1)
        cout, groups = b.size, int(node.get("groups", 1))
        s_x = np.abs(np.asarray(self.T[node["input"]]["scale"], np.float64)).reshape(-1)
        s_in = np.repeat(np.broadcast_to(s_x, (groups * (s_x.size // groups or 1),)).reshape(groups, -1)[:, 0],
                         cout // groups)
        unit = s_in * s_w
        return np.round(b / unit) * unit

    def mac(self, node, x):
        torch, F = self.torch, self.torch.nn.functional
        w = np.asarray(node["weight_codes"], np.float64) - np.asarray(node["weight_zero_point"], np.float64).reshape(
            (-1,) + (1,) * (np.ndim(node["weight_codes"]) - 1))
        s_w = np.abs(np.asarray(node["weight_scale"], np.float64)).reshape((-1,) + (1,) * (w.ndim - 1))
        w = torch.as_tensor(w * s_w)
        b = torch.as_tensor(self._bias_on_grid(node, s_w.reshape(-1)))
        xr = self.real(node["input"], x)
        if node["op"] == "linear":
            y = F.linear(xr, w, b)
        else:
            y = F.conv2d(xr, w, b, int(np.max(node["stride"])), int(np.max(node["padding"])), 1, int(node["groups"]))
        if node["act"] == "hswish":
            y = self._hswish_knee(node["pre"], self.quantize(node["pre"], y))
        if node["out_div"] is not None:
            y = y / torch.as_tensor(np.asarray(node["out_div"], np.float64)).view(1, -1, *([1] * (y.ndim - 2)))
        return self.quantize(node["output"], y)

    def attention(self, node, t):
        """One branch, all heads (docs/quantized_format.md, `attention`): (B, 3 H d, h, w) -> (B, H d, h, w)."""
        torch = self.torch
        H, d = int(node["heads"]), int(node["dim"])
        B, _, h, w = t.shape
        xr = self.real(node["input"], t).reshape(B, H, 3 * d, h * w).transpose(-1, -2)   # (B, H, N, 3d)
        q, k, v = xr[..., :d], xr[..., d:2 * d], xr[..., 2 * d:]
        qr, kr = torch.relu(q), torch.relu(k)
        kv = self.real(node["kv"], self.quantize(node["kv"], kr.transpose(-1, -2) @ v))   # (B, H, d, d)
        ks = self.real(node["ks"], self.quantize(node["ks"], kr.sum(dim=2)))             # (B, H, d)
        num = qr @ kv
        den = qr @ ks.unsqueeze(-1)
        s_q = float(np.abs(np.asarray(self.T[node["input"]]["scale"], np.float64)).reshape(-1)[0])
        unit = s_q * torch.as_tensor(np.abs(np.asarray(self.T[node["ks"]]["scale"], np.float64))).view(1, -1, 1, 1)
        div, _ = log2_divisor(torch.round(den / unit), node["e_lo"], int(node["log2_bits"]),
                              int(node.get("log2_frac", 0)))
        out = num / (div * unit)
        return out.transpose(-1, -2).reshape(B, H * d, h, w)

    def __call__(self, pixels: np.ndarray, keep: bool = False):
        """Logit codes of ``pixels``; with ``keep`` the codes of every stored tensor (name -> array)."""
        torch = self.torch
        ir = self.ir
        env = {ir["graph_input"]: torch.as_tensor(np.asarray(pixels, np.float64))}
        real_attn: dict[str, object] = {}
        for node in ir["nodes"]:
            op, out = node["op"], node["output"]
            if op in arch_ir.MAC_OPS:
                src = node["input"]
                if src in real_attn:        # both branches written: quantize the projection's input
                    env[src] = self.quantize(src, real_attn.pop(src))
                env[out] = self.mac(node, env[src])
            elif op == "add":
                a, b = node["inputs"]
                env[out] = self.quantize(out, self.real(a, env[a]) + self.real(b, env[b]))
            elif op == "attention":
                y = self.attention(node, env[node["input"]])
                prev = real_attn.get(out)
                o = int(node["out_channel_offset"])
                if prev is None:
                    C = int(self.T[out].get("channels") or 2 * y.shape[1])
                    prev = real_attn[out] = torch.zeros((y.shape[0], C, *y.shape[2:]), dtype=torch.float64)
                prev[:, o:o + y.shape[1]] = y
            elif op == "avgpool":
                env[out] = self.quantize(out, self.real(node["input"], env[node["input"]]).mean(dim=(2, 3)))
            elif op == "layernorm_hswish":
                x = self.real(node["input"], env[node["input"]])
                wt = torch.as_tensor(np.asarray(node["weight"], np.float64))
                bs = torch.as_tensor(np.asarray(node["bias"], np.float64))
                y = torch.nn.functional.layer_norm(x, x.shape[-1:], wt, bs, float(node["eps"]))
                env[out] = self.quantize(out, self._hswish_knee(node["pre"], self.quantize(node["pre"], y)))
            else:
                raise ValueError(f"unknown op {op!r}")
        for name, y in real_attn.items():          # an attention output nothing reads (not in EfficientViT)
            env[name] = self.quantize(name, y)
        if keep:
            return {k: v.numpy().astype(np.int64) for k, v in env.items()}
        return env[ir["graph_output"]].numpy().astype(np.int64)


def logit_format(ir: dict) -> formats.IntFormat:
    return arch_ir.tensor_format(ir, ir["graph_output"])
