"""Golden vectors: per-op integer inputs, parameters and expected outputs, with a versioned manifest.

Layout of a vector folder (format described in golden/SPEC.md section 11)::

    VECDIR/manifest.json         format, version, model, image, the list of records
    VECDIR/NNNN_<layer>_<op>.npz one file per op call: its arguments and outputs

A record names the ``golden.ops`` function that produced it, so a reader can
replay it (``replay``) and a testbench can feed the same arrays to RTL.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import ops

FORMAT = "triovit-golden-vectors"
VERSION = 1
MANIFEST = "manifest.json"

# Which keyword arguments of each op are data (activations / accumulators); the rest are parameters.
DATA_ARGS = {
    "conv2d": ("x",), "linear": ("x",), "requantize": ("acc",), "hardswish": ("p",),
    "residual_add": ("a", "b"), "relu_zp": ("x",), "attention_kv": ("k", "v"),
    "attention_requant_kv": ("kv_acc", "ksum"), "attention_num_den": ("q", "kv", "ks"),
    "log2_code": ("den",), "attention_divide": ("num", "e"), "attention_out": ("q", "kv", "ks"),
    "global_avgpool": ("x",), "layernorm": ("x",), "logits_requant": ("acc",),
}
OUTPUT_NAMES = {
    "attention_kv": ("kv_acc", "ksum"), "attention_requant_kv": ("kv", "ks"),
    "attention_num_den": ("num", "den"), "log2_code": ("e", "code"),
}
RECORD_FIELDS = ("index", "layer", "op", "file", "inputs", "params", "outputs", "scalars")


class VectorFormatError(ValueError):
    """A vector folder that this reader cannot use (wrong format, version or a missing field)."""


def _small_dtype(a: np.ndarray) -> np.dtype:
    """The narrowest standard integer dtype holding every value (so RTL sees the real width)."""
    if a.size == 0:
        return np.dtype(np.int32)
    lo, hi = int(a.min()), int(a.max())
    for dt in (np.uint8, np.int8, np.int16, np.int32, np.int64):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    raise OverflowError(f"values [{lo}, {hi}] exceed int64")


def _desc(a: np.ndarray) -> dict:
    return {"shape": list(a.shape), "dtype": str(a.dtype)}


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)[:80]


@dataclass
class Recorder:
    """Collects op calls (``call``) for one image; ``layers`` filters by layer-name prefix."""
    layers: tuple[str, ...] | None = None
    records: list[dict] = field(default_factory=list)
    arrays: list[dict[str, np.ndarray]] = field(default_factory=list)

    def wants(self, layer: str) -> bool:
        return self.layers is None or any(layer == p or layer.startswith(p + ".") for p in self.layers)

    def call(self, layer: str, op: str, **kwargs):
        """Run ``golden.ops.<op>(**kwargs)`` and, if ``layer`` is selected, record it."""
        out = getattr(ops, op)(**kwargs)
        if self.wants(layer):
            self.add(layer, op, kwargs, out)
        return out

    def add(self, layer: str, op: str, kwargs: dict, out) -> None:
        data = DATA_ARGS.get(op, ())
        arrays: dict[str, np.ndarray] = {}
        rec = {"index": len(self.records), "layer": layer, "op": op, "inputs": {}, "params": {},
               "outputs": {}, "scalars": {}}
        for k, v in kwargs.items():
            if isinstance(v, (bool, str, float)) or v is None:
                rec["scalars"][k] = v
                continue
            a = np.asarray(v)
            if a.dtype.kind not in "iub":
                raise TypeError(f"{layer}/{op}: argument {k} has dtype {a.dtype}; vectors hold integers only")
            if a.ndim == 0 and k not in data:
                rec["scalars"][k] = int(a)
                continue
            a = a.astype(_small_dtype(a))
            arrays[f"in.{k}" if k in data else f"param.{k}"] = a
            (rec["inputs"] if k in data else rec["params"])[k] = _desc(a)
        outs = out if isinstance(out, dict) else dict(zip(OUTPUT_NAMES.get(op, ("out",)),
                                                          out if isinstance(out, tuple) else (out,)))
        for k, v in outs.items():
            a = np.asarray(v)
            a = a.astype(_small_dtype(a))
            arrays[f"out.{k}"] = a
            rec["outputs"][k] = _desc(a)
        rec["file"] = f"{rec['index']:04d}_{_slug(layer)}_{op}.npz"
        self.records.append(rec)
        self.arrays.append(arrays)


def write(recorder: Recorder, out_dir: str | Path, model: dict, image: str) -> Path:
    """Write the recorded vectors and manifest.json into ``out_dir``; returns the manifest path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not recorder.records:
        raise ValueError("no op was recorded: check the --layer name (it must prefix a layer name)")
    for rec, arrays in zip(recorder.records, recorder.arrays):
        np.savez_compressed(out / rec["file"], **arrays)
    manifest = {"format": FORMAT, "version": VERSION, "spec": "golden/SPEC.md section 11",
                "model": model, "image": image, "num_records": len(recorder.records),
                "ops": sorted({r["op"] for r in recorder.records}), "records": recorder.records}
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=1))
    return path


def _need(d: dict, key: str, where: str):
    if key not in d:
        raise VectorFormatError(f"{where}: missing field {key!r} (format {FORMAT} v{VERSION}; see golden/SPEC.md section 11)")
    return d[key]


def read_manifest(vec_dir: str | Path) -> dict:
    """Load and validate manifest.json: format, version and every record's fields."""
    path = Path(vec_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a golden vector folder (write one with `python -m golden dump`)")
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise VectorFormatError(f"{path}: not valid JSON ({e})") from None
    fmt = _need(m, "format", str(path))
    if fmt != FORMAT:
        raise VectorFormatError(f"{path}: format is {fmt!r}, expected {FORMAT!r}")
    ver = _need(m, "version", str(path))
    if ver != VERSION:
        raise VectorFormatError(f"{path}: version {ver} is not supported by this reader (it reads version {VERSION}); "
                                "regenerate the vectors with this checkout's `python -m golden dump`")
    for key in ("model", "image", "records"):
        _need(m, key, str(path))
    for i, rec in enumerate(m["records"]):
        for key in RECORD_FIELDS:
            _need(rec, key, f"{path}: record {i}")
        if rec["op"] not in DATA_ARGS:
            raise VectorFormatError(f"{path}: record {i} names unknown op {rec['op']!r}")
    return m


def load_record(vec_dir: str | Path, rec: dict) -> tuple[dict, dict]:
    """Arrays of one record: ``(kwargs for the op, expected outputs)``; checks shapes and dtypes."""
    f = Path(vec_dir) / rec["file"]
    if not f.is_file():
        raise FileNotFoundError(f"{f} (record {rec['index']}, {rec['layer']} {rec['op']}) is missing")
    with np.load(f) as z:
        arrays = {k: z[k] for k in z.files}
    kwargs: dict = dict(rec["scalars"])
    expected: dict = {}
    for group, prefix, dest in (("inputs", "in.", kwargs), ("params", "param.", kwargs), ("outputs", "out.", expected)):
        for name, desc in rec[group].items():
            key = prefix + name
            if key not in arrays:
                raise VectorFormatError(f"{f}: missing array {key!r} named by the manifest")
            a = arrays[key]
            if list(a.shape) != desc["shape"] or str(a.dtype) != desc["dtype"]:
                raise VectorFormatError(f"{f}: array {key!r} is {a.dtype}{list(a.shape)}, manifest says "
                                        f"{desc['dtype']}{desc['shape']}")
            dest[name] = a
    return kwargs, expected


def replay(vec_dir: str | Path, rec: dict) -> list[str]:
    """Re-run one record's op from its stored arguments; returns the names of outputs that differ."""
    kwargs, expected = load_record(vec_dir, rec)
    out = getattr(ops, rec["op"])(**kwargs)
    outs = out if isinstance(out, dict) else dict(zip(OUTPUT_NAMES.get(rec["op"], ("out",)),
                                                      out if isinstance(out, tuple) else (out,)))
    return [k for k, v in expected.items() if not np.array_equal(np.asarray(outs[k]), v)]
