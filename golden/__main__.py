"""Command line of golden/ (golden/SPEC.md):

  python -m golden eval   --quantized OUT/quantized.pt --data_path DIR [--output DIR2]   -> DIR2/golden.json
  python -m golden dump   --quantized OUT/quantized.pt --image IMG --output VECDIR [--layer NAME ...]
  python -m golden widths [--models B0,B1,B2,B3] [--resolution 288] [--out DIR] [--spec golden/SPEC.md]
  python -m golden all    --out DIR [--assets DIR] [--quantized Q]                        (make golden)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from quant.malloc_tuning import keep_freed_memory


def cmd_widths(args) -> int:
    from .widths import markdown, table
    variants = [f"efficientvit_{m.strip().lower()}" for m in args.models.split(",")]
    rows = table(variants, args.resolution)
    text = markdown(rows, args.resolution)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "widths.json").write_text(json.dumps(dict(resolution=args.resolution, rows=rows), indent=1))
        (out / "widths.md").write_text(text + "\n")
    if args.spec:
        spec = Path(args.spec)
        t = spec.read_text()
        begin, end = "<!-- widths:begin", "<!-- widths:end -->"
        if begin not in t or end not in t:
            raise SystemExit(f"{spec}: markers {begin} ... {end} not found")
        a = t.index("\n", t.index(begin)) + 1
        spec.write_text(t[:a] + text + "\n" + t[t.index(end):])
        print(f"rewrote the width table in {spec}")
    worst = max(r["raw_bits"] for r in rows if "64-bit" not in r["kind"])
    print(f"\nwidest 32-bit accumulator need: {worst} bits (raw partial sums, bias excluded)")
    return 0 if worst <= 32 else 1


def cmd_eval(args) -> int:
    from .evaluate import evaluate, summary, write
    r = evaluate(args.quantized, args.data_path, args.split, args.max_val, args.batch_size,
                 float64=not args.float32, progress=not args.quiet, every=args.every)
    print(summary(r))
    if args.output:
        print(f"wrote {write(r, args.output)}")
    return 0


def load_image(path: str | Path, input_size: int, crop_ratio: float):
    """One image file -> uint8 (3, H, W) pixels after the MIT resize and center crop."""
    import math
    import numpy as np
    from PIL import Image
    from torchvision import transforms as T
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--image {p} does not exist")
    try:
        im = Image.open(p).convert("RGB")
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"--image {p} is not a readable image: {e}") from None
    im = T.CenterCrop(input_size)(T.Resize(math.ceil(input_size / crop_ratio),
                                           interpolation=T.InterpolationMode.BICUBIC)(im))
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


def dump(quantized, image, output, layers=None, check: bool = True) -> dict:
    from . import convert, execute, vectors
    ir = convert.read_ir(quantized)
    model = convert.from_ir(ir)
    u8 = load_image(image, model["resolution"], float(ir.get("crop_ratio", 1.0)))
    rec = vectors.Recorder(layers=tuple(layers) if layers else None)
    logits = execute.run(model, u8, rec=rec)
    info = dict(name=model["model"], resolution=model["resolution"], num_classes=model["num_classes"],
                quantized=str(quantized), ir_format_version=ir["version"], int_model_version=model["version"],
                conversion_notes=model["notes"], logits=[int(v) for v in logits[0]], top1=int(logits[0].argmax()))
    path = vectors.write(rec, output, info, str(image))
    bad = []
    if check:   # reload every record through the reader and re-run its op
        m = vectors.read_manifest(output)
        for r in m["records"]:
            diff = vectors.replay(output, r)
            if diff:
                bad.append(f"{r['file']}: {diff}")
    return dict(manifest=str(path), records=len(rec.records), ops=sorted({r["op"] for r in rec.records}),
                layers=len({r["layer"] for r in rec.records}), replay_failures=bad)


def cmd_dump(args) -> int:
    r = dump(args.quantized, args.image, args.output, args.layer, check=not args.no_check)
    print(f"wrote {r['records']} op records of {r['layers']} layers to {r['manifest']}; ops: {', '.join(r['ops'])}")
    if not args.no_check:
        print(f"reloaded and replayed every record: {len(r['replay_failures'])} mismatches")
    return 1 if r["replay_failures"] else 0


def cmd_all(args) -> int:
    """make golden: quantize the embedded default (quant.demo, no reconstruction) unless --quantized is
    given, then eval, dump every layer's vectors for the first val image, and the width table."""
    from .evaluate import evaluate, summary, write
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.assets:
        data = Path(args.assets) / "data" / "imagenette"
    else:
        data = out / "demo" / "synthetic"
    quantized = Path(args.quantized) if args.quantized else out / "demo" / "run" / "quantized.pt"
    if not args.quantized and (args.requantize or not quantized.is_file()):
        from quant.demo import main as demo_main
        (out / "demo").mkdir(parents=True, exist_ok=True)      # quant.demo saves into it before creating it
        demo_args = ["--out", str(out / "demo"), "--iters", str(args.iters)]
        if args.assets:
            demo_args += ["--assets", str(args.assets)]
        print(f"golden all: quantizing the default model with quant.demo {' '.join(demo_args)}", flush=True)
        rc = demo_main(demo_args)
        if rc:
            return rc
    if args.data_path:
        data = Path(args.data_path)
    r = evaluate(quantized, data, "val", args.max_val, progress=not args.quiet)
    print(summary(r))
    print(f"wrote {write(r, out)}")
    first = sorted(p for p in (data / "val").rglob("*") if p.is_file())[0]
    d = dump(quantized, first, out / "vectors")
    print(f"vectors: {d['records']} records, {d['layers']} layers, ops {', '.join(d['ops'])}; "
          f"replay mismatches: {len(d['replay_failures'])} -> {d['manifest']}")
    wargs = argparse.Namespace(models=args.models, resolution=288, out=str(out), spec=None)
    cmd_widths(wargs)
    return 1 if d["replay_failures"] else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golden", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("widths", help="worst-case accumulator widths of B0..B3 (SPEC section 9)")
    w.add_argument("--models", default="B0,B1,B2,B3", help="comma-separated, e.g. B0,B3")
    w.add_argument("--resolution", type=int, default=288)
    w.add_argument("--out", default=None, help="also write widths.json / widths.md here")
    w.add_argument("--spec", default=None, help="rewrite the table between the widths markers of this SPEC.md")
    w.set_defaults(fn=cmd_widths)

    e = sub.add_parser("eval", help="integer-only vs fake-quant top-1 and agreement -> golden.json")
    e.add_argument("--quantized", required=True, help="quantized.pt written by main_imagenet.py --output")
    e.add_argument("--data_path", required=True, help="ImageNet-layout folder (uses its val/ unless --split)")
    e.add_argument("--output", default=None, help="write OUTPUT/golden.json")
    e.add_argument("--split", default="val")
    e.add_argument("--max_val", type=int, default=None, help="first N images of the split only")
    e.add_argument("--every", type=int, default=1, help="evaluate every k-th image of the split (quick runs)")
    e.add_argument("--batch_size", type=int, default=16)
    e.add_argument("--float32", action="store_true",
                   help="evaluate the fake-quant reference in float32 (default float64, same weight codes)")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(fn=cmd_eval)

    d = sub.add_parser("dump", help="golden vectors of one image (every layer, or --layer prefixes)")
    d.add_argument("--quantized", required=True)
    d.add_argument("--image", required=True, help="an image file (resized and cropped like the eval)")
    d.add_argument("--output", required=True, help="vector folder (manifest.json + one .npz per op call)")
    d.add_argument("--layer", action="append", default=None,
                   help="record only layers with this name or prefix (repeatable), e.g. stages.2.blocks.1.context")
    d.add_argument("--no_check", action="store_true", help="skip reloading and replaying the written vectors")
    d.set_defaults(fn=cmd_dump)

    a = sub.add_parser("all", help="make golden: (quantize the default,) eval, dump, widths")
    a.add_argument("--out", required=True)
    a.add_argument("--assets", default=None, help="../shared/assets: real proxy model and Imagenette")
    a.add_argument("--quantized", default=None, help="use this quantized.pt instead of quantizing the default")
    a.add_argument("--data_path", default=None, help="override the evaluation data folder")
    a.add_argument("--requantize", action="store_true", help="re-run the default quantization even if present")
    a.add_argument("--iters", type=int, default=0, help="reconstruction iterations for the default quantization")
    a.add_argument("--max_val", type=int, default=None)
    a.add_argument("--models", default="B0,B1,B2,B3")
    a.add_argument("--quiet", action="store_true")
    a.set_defaults(fn=cmd_all)
    args = ap.parse_args(argv)
    keep_freed_memory()
    try:
        return args.fn(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
