"""`make demo`: the whole flow end to end, on any machine: quantize, compile, execute, price.

Without assets it writes a seeded EfficientViT-B0 checkpoint and synthetic
images (ImageNet layout, labelled with the float model's own predictions, so
top-1 there *is* agreement with the float model) and runs main_imagenet.py on
them. With `--assets DIR` it runs the real proxy model on the real Imagenette
images instead. After main_imagenet.py's report it compiles the quantized
model for the `small` and `paper` presets, executes the `small` program in
golden/ from its DRAM image on the first val image (bit-exact against the
integer model or not) and prices the `paper` program with pysim.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from golden.malloc_tuning import keep_freed_memory
from quant.cli import main as cli_main
from quant.data import SyntheticImages, eval_transform
from quant.models import create_model, get_spec


def _write_synthetic(root: Path, model, n_train: int, n_val: int, size: int, seed: int) -> None:
    from PIL import Image
    mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    spec = get_spec("b0-r224")
    tf = eval_transform(spec.input_size, spec.crop_ratio)
    for split, n, off in (("train", n_train, 0), ("val", n_val, 10_000)):
        ds = SyntheticImages(n, size, seed=seed + off)
        for i in range(n):
            x, _ = ds[i]
            pix = ((x * std + mean) * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
            img = Image.fromarray(pix)
            with torch.no_grad():
                label = int(model(tf(img)[None]).argmax())  # pseudo-label: the float model's prediction
            d = root / split / f"class_{label:02d}"
            d.mkdir(parents=True, exist_ok=True)
            img.save(d / f"img_{i:04d}.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--assets", default=None, help="../shared/assets: use the real proxy model and images")
    p.add_argument("--out", default="build/demo")
    p.add_argument("--iters", type=int, default=None, help="reconstruction iterations per block (weights and activations)")
    a = p.parse_args(argv)
    keep_freed_memory()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--model", "b0-r224", "--n_bits_w", "8", "--channel_wise", "--n_bits_a", "8", "--act_quant",
              "--disable_8bit_head_stem", "--input_size", "224", "--test_before_calibration",
              "--output", str(out / "run"), "--workers", "0"]
    if a.assets:
        assets = Path(a.assets)
        ckpt = assets / "models" / "efficientvit_b0_imagenette.pt"
        data = assets / "data" / "imagenette"
        if not ckpt.is_file() or not (data / "val").is_dir():
            print(f"error: {assets} does not hold {ckpt.name} and data/imagenette (see shared/assets/README.md)",
                  file=sys.stderr)
            return 2
        iters = 0 if a.iters is None else a.iters
        print(f"demo: real proxy EfficientViT-B0 (Imagenette head) on {data}", flush=True)
        args = ["--data_path", str(data), "--weight_url", str(ckpt), "--num_samples", "256"]
    else:
        iters = 20 if a.iters is None else a.iters
        data = out / "synthetic"
        ckpt = out / "b0_seeded.pt"
        if data.exists():
            shutil.rmtree(data)
        model = create_model("b0-r224", num_classes=10, seed=0)
        torch.save(model.state_dict(), ckpt)
        print("demo: seeded EfficientViT-B0 on synthetic images (labels are the float model's predictions, "
              "so top-1 equals agreement with the float model)", flush=True)
        _write_synthetic(data, model, n_train=64, n_val=96, size=224, seed=0)
        args = ["--data_path", str(data), "--weight_url", str(ckpt), "--num_samples", "64"]
    args += ["--iters_w", str(iters), "--iters_a", str(iters)]
    rc = cli_main(args + common)
    return rc or machine_report(out / "run" / "quantized.pt", data)


def machine_report(quantized: Path, data: Path) -> int:
    """The quantized model as the machine runs it: one program, executed by golden/, priced by pysim/."""
    from arch.compiler import compile_ir
    from arch.config import PRESETS
    from golden import convert
    from golden import program as gprog
    from golden.images import load_image
    from pysim.price import price

    ir = convert.read_ir(quantized)
    model = convert.from_ir(ir)
    first = sorted(p for p in (data / "val").rglob("*") if p.is_file())[0]
    pixels = load_image(first, model["resolution"], float(ir["crop_ratio"]))
    print("\nthe machine (one program per preset, arch/compiler.py):")
    ok = True
    for name in ("small", "paper"):
        prog = compile_ir(ir, PRESETS[name])
        r = gprog.check(prog, model, pixels)
        p = price(prog)
        ok &= r["bit_exact"]
        where = "" if r["bit_exact"] else f"; first difference: {r['first_difference']}"
        print(f"  {name:6s} {len(prog.ops):4d} operations in {len(prog.groups):3d} groups, DRAM image "
              f"{prog.dram_bytes / 1e6:6.2f} MB; golden executes it on {first.name}: "
              f"{'bit-exact' if r['bit_exact'] else 'DIFFERS'} with the integer model{where}; pysim: "
              f"{p['cycles']:,} cycles, {p['fps']:.1f} FPS at {PRESETS[name].clock_mhz:g} MHz, "
              f"MAC utilization {100 * p['mac_utilization']:.1f}%")
    ok &= rtl_report(ir, first)
    return 0 if ok else 1


RTL_PRESET, RTL_RESOLUTION, RTL_SCRATCH_KIB = "small", 64, 1536


def rtl_report(ir: dict, image: Path) -> bool:
    """One image on the RTL machine under Verilator (tb/run_network.py): the demo's model at
    RTL_RESOLUTION (same weights, a shorter run than 224) on the small preset, with a scratch that
    holds its largest layer, compared with golden/ bit for bit; beside it pysim's FPS at the paper
    preset for the model's own resolution."""
    from arch.compiler import compile_ir
    from arch.config import PRESETS
    from golden.images import load_image
    from pysim.price import price
    from tb.run_network import run_network, summary

    cfg = PRESETS[RTL_PRESET].replace(act_buffer_kib=RTL_SCRATCH_KIB)
    pixels = load_image(image, RTL_RESOLUTION, float(ir["crop_ratio"]))
    print(f"\nthe RTL machine (Verilator; {image.name} at {RTL_RESOLUTION}x{RTL_RESOLUTION}, preset {RTL_PRESET}, "
          f"scratch {RTL_SCRATCH_KIB} KiB):", flush=True)
    r = run_network(ir, pixels, cfg, case="demo", resolution=RTL_RESOLUTION, profile=2000)
    print("  " + summary(r).replace("\n", "\n  "))
    paper = price(compile_ir(ir, PRESETS["paper"]))
    print(f"  pysim at the paper preset, {paper['resolution']}x{paper['resolution']}: {paper['fps']:.1f} FPS, "
          f"MAC utilization {100 * paper['mac_utilization']:.1f}%")
    return r["bit_exact"]


if __name__ == "__main__":
    sys.exit(main())
