"""Command line of golden/ (golden/SPEC.md):

  python -m golden eval   --quantized OUT/quantized.pt --data_path DIR [--output DIR2]   -> DIR2/golden.json
  python -m golden dump   --quantized OUT/quantized.pt --image IMG --output VECDIR [--layer NAME ...]
  python -m golden program --quantized OUT/quantized.pt --image IMG (--preset NAME | --program P.json)
                           [--dram F.bin] [--json F]
"""
from __future__ import annotations

import argparse
import sys

from golden.malloc_tuning import keep_freed_memory


def cmd_eval(args) -> int:
    from .evaluate import evaluate, summary, write
    r = evaluate(args.quantized, args.data_path, args.split, args.max_val, args.batch_size,
                 progress=not args.quiet, every=args.every, reference_ops=args.reference_ops)
    print(summary(r))
    if args.output:
        print(f"wrote {write(r, args.output)}")
    return 0


def dump(quantized, image, output, layers=None, check: bool = True) -> dict:
    from . import convert, execute, vectors
    from .images import load_image
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


def cmd_program(args) -> int:
    """Execute the machine program from its DRAM image alone and compare it with the integer model."""
    import json

    import numpy as np

    from arch.compiler import compile_ir
    from arch.config import get_preset
    from arch.program import Program

    from . import convert
    from . import program as gprog
    from .images import load_image
    ir = convert.read_ir(args.quantized)
    if args.program:
        prog = Program.load(args.program)
        if prog.model != ir["model"]:
            raise ValueError(f"{args.program} was compiled for {prog.model}, {args.quantized} holds {ir['model']}")
    else:
        try:
            prog = compile_ir(ir, get_preset(args.preset))
        except KeyError as e:
            raise ValueError(e.args[0]) from None
    model = convert.from_ir(ir, cfg=prog.config)
    pixels = load_image(args.image, model["resolution"], float(ir.get("crop_ratio", 1.0)))
    dram = gprog.dram_image(prog, model)
    if args.dram:
        dram.tofile(args.dram)
        print(f"wrote the DRAM image ({dram.size:,} bytes) to {args.dram}")
    r = gprog.check(prog, model, pixels, dram)
    print(f"{prog.model} on {prog.config.name}: {len(prog.ops)} operations, {prog.macs:,} MACs; golden executes the "
          f"program from its DRAM image: {'bit-exact' if r['bit_exact'] else 'DIFFERS'} with the integer model "
          f"(top-1 {int(np.argmax(r['logits']))})")
    if r["first_difference"]:
        print(f"first difference: {r['first_difference']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(r, fh, indent=1)
    return 0 if r["bit_exact"] else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golden", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval", help="integer-only vs fake-quant top-1 and agreement -> golden.json")
    e.add_argument("--quantized", required=True, help="quantized.pt written by main_imagenet.py --output")
    e.add_argument("--data_path", required=True, help="ImageNet-layout folder (uses its val/ unless --split)")
    e.add_argument("--output", default=None, help="write OUTPUT/golden.json")
    e.add_argument("--split", default="val")
    e.add_argument("--max_val", type=int, default=None, help="first N images of the split only")
    e.add_argument("--every", type=int, default=1, help="evaluate every k-th image of the split (quick runs)")
    e.add_argument("--batch_size", type=int, default=16)
    e.add_argument("--quiet", action="store_true")
    e.add_argument("--reference_ops", action="store_true",
                   help="run the integer model on golden/execute.py + ops.py (the slow definition) "
                        "instead of golden/fast.py")
    e.set_defaults(fn=cmd_eval)

    d = sub.add_parser("dump", help="golden vectors of one image (every layer, or --layer prefixes)")
    d.add_argument("--quantized", required=True)
    d.add_argument("--image", required=True, help="an image file (resized and cropped like the eval)")
    d.add_argument("--output", required=True, help="vector folder (manifest.json + one .npz per op call)")
    d.add_argument("--layer", action="append", default=None,
                   help="record only layers with this name or prefix (repeatable), e.g. stages.2.blocks.1.context")
    d.add_argument("--no_check", action="store_true", help="skip reloading and replaying the written vectors")
    d.set_defaults(fn=cmd_dump)

    r = sub.add_parser("program", help="compile (or load) the machine program, execute it from its DRAM image, "
                                       "compare with the integer model")
    r.add_argument("--quantized", required=True)
    r.add_argument("--image", required=True)
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="compile for this accelerator preset")
    src.add_argument("--program", help="a program written by python -m pysim --program")
    r.add_argument("--dram", default=None, help="also write the DRAM image (raw bytes) here")
    r.add_argument("--json", default=None, help="write the logits, the reference and the first difference here")
    r.set_defaults(fn=cmd_program)

    args = ap.parse_args(argv)
    keep_freed_memory()
    try:
        return args.fn(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
