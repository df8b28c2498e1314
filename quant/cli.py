"""main_imagenet.py: the reference PTQ script's command line over quant.engine.quantize."""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import distributed as dist
from .config import QuantConfig
from .data import UnreadableImageError, calibration_subset, image_folder, loader
from .engine import quantize
from .evaluate import accuracy, agreement, predict, predict_integer, sqnr_db
from .export import save_quantized, to_ir
from golden import convert as golden_convert
from golden.images import pixel_folder
from golden.malloc_tuning import keep_freed_memory
from .models import MODELS, ModelSpec, build_model, get_spec
from .report import format_report

# Where MIT publishes its ImageNet checkpoints; used when --weight_url is not given.
MIT_CKPT_URL = "https://huggingface.co/han-cai/efficientvit-cls/resolve/main/{name}.pt"

# Reference flags kept for command-line compatibility that change nothing here.
INERT_FLAGS = {
    "step": "--step records per-step spiking outputs in the reference; it does nothing here",
    "keep_cpu": "--keep_cpu: calibration data always stays on the CPU here",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Trio-ViT post-training quantization of EfficientViT (BRECQ-style reconstruction)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="b1-r224", choices=list(MODELS), help="EfficientViT variant and resolution")
    g.add_argument("--arch", default=None, help="alias of --model (reference compatibility)")
    g.add_argument("--weight_url", default=None,
                   help="checkpoint: local path or http(s) URL (MIT {'state_dict'} or timm state dict); "
                        "default: MIT's published checkpoint for --model")
    g.add_argument("--data_path", required=True, help="ImageNet-layout folder with train/ and val/")
    g.add_argument("--input_size", type=int, default=None, help="must match --model's resolution")
    g.add_argument("--crop_ratio", type=float, default=None, help="eval crop ratio (default 0.95 B0/B1, 1.0 B2/B3)")
    g.add_argument("--batch_size", type=int, default=64, help="evaluation batch size")
    g.add_argument("--workers", type=int, default=2, help="data loading workers")
    g.add_argument("--seed", type=int, default=1005)
    g.add_argument("--output", default=None, help="write DIR/results.json and DIR/quantized.pt")
    g.add_argument("--test_before_calibration", action="store_true", help="evaluate the float model first")
    g.add_argument("--max_val", type=int, default=None, help="evaluate on the first N val images only")
    g = p.add_argument_group("quantization")
    g.add_argument("--n_bits_w", type=int, default=4)
    g.add_argument("--channel_wise", action="store_true", help="per-output-channel weight scales")
    g.add_argument("--n_bits_a", type=int, default=4)
    g.add_argument("--act_quant", action="store_true", help="quantize activations (else weight-only)")
    g.add_argument("--disable_8bit_head_stem", action="store_true",
                   help="let the first conv and the last linear use --n_bits_* instead of 8 bits")
    g.add_argument("--recipe", choices=["hardware", "reference"], default="hardware",
                   help="hardware: symmetric weights (what golden/ and the RTL run); reference: asymmetric weights")
    g.add_argument("--p", type=float, default=2.4, help="Lp norm of the range search")
    g.add_argument("--no_migration", action="store_true", help="disable channel-wise migration")
    g.add_argument("--no_shift", action="store_true", help="disable filter-wise shifting")
    g.add_argument("--no_log2", action="store_true", help="divide by the float divisor (no log2 quantization)")
    g.add_argument("--no_stream_eq", action="store_true",
                   help="disable residual-stream equalization (per-channel scales folded into the weights)")
    g.add_argument("--stream_alpha", type=float, default=1.0,
                   help="residual-stream equalization's balance: 1 equalizes activation ranges only, 0 weights only")
    g.add_argument("--proj_eq", action="store_true",
                   help="projection-input equalization: each MBConv projection's input scaled per channel, folded "
                        "into the weights (off by default: no gain in top-1 on the proxy)")
    g.add_argument("--no_head_eq", action="store_true",
                   help="disable head equalization (LiteMLA's q, k, v rescaled per head, folded into the weights)")
    g.add_argument("--no_bias_correction", action="store_true",
                   help="no expected-error bias correction of the weights' rounding (on by default; int32 biases only)")
    g.add_argument("--output_bias", action="store_true",
                   help="empirical bias correction: each op's bias takes back the per-channel mean error of its "
                        "output with everything before it quantized (int32 biases only; off by default: no "
                        "gain beyond noise on the proxy)")
    g.add_argument("--vanilla", action="store_true",
                   help="none of the three Trio-ViT techniques (nor any hardware-free correction)")
    g.add_argument("--log2_bits", type=int, default=4, help="bits of the divisor's exponent code")
    g.add_argument("--no_log2_mantissa", action="store_true",
                   help="the divisor in powers of two, as Trio-ViT (default: {1, 4/3} 2^e, one more "
                        "multiplier row per column in the divider)")
    g.add_argument("--log2_clamp", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                   help="fixed exponent window of the divisor (integer units); default: calibrated")
    g = p.add_argument_group("reconstruction")
    g.add_argument("--num_samples", type=int, default=1024, help="calibration images drawn from train/")
    g.add_argument("--iters_w", type=int, default=20000, help="AdaRound iterations per block (0 skips)")
    g.add_argument("--weight", type=float, default=0.01, help="rounding loss weight")
    g.add_argument("--b_start", type=float, default=20.0)
    g.add_argument("--b_end", type=float, default=2.0)
    g.add_argument("--warmup", type=float, default=0.2)
    g.add_argument("--iters_a", type=int, default=5000, help="activation step iterations per block (0 skips)")
    g.add_argument("--lr", type=float, default=4e-4, help="learning rate of the activation steps")
    g.add_argument("--calib_batch_size", type=int, default=32, help="calibration batch size")
    g.add_argument("--rec_batch_size", type=int, default=8,
                   help="images per reconstruction step (reference: 32; 8 keeps 500+500 steps of B0 "
                        "at about 10 minutes on 2 CPU cores)")
    g.add_argument("--sym", action="store_true",
                   help="symmetric reconstruction: fit each block from the float input (reference: not recommended)")
    g.add_argument("--step", type=int, default=None, help=argparse.SUPPRESS)
    g.add_argument("--keep_cpu", action="store_true", help=argparse.SUPPRESS)
    g.add_argument("--no_progress", action="store_true", help="no progress bars")
    return p


def config_from_args(a: argparse.Namespace) -> QuantConfig:
    return QuantConfig(
        n_bits_w=a.n_bits_w, n_bits_a=a.n_bits_a, channel_wise=a.channel_wise, act_quant=a.act_quant,
        weight_symmetric=a.recipe == "hardware", keep_8bit_head_stem=not a.disable_8bit_head_stem, p=a.p,
        migration=not (a.no_migration or a.vanilla), shift=not (a.no_shift or a.vanilla),
        log2=not (a.no_log2 or a.vanilla), log2_bits=a.log2_bits, log2_frac=0 if a.no_log2_mantissa else 1,
        bias_correction=not (a.no_bias_correction or a.vanilla),
        output_bias=a.output_bias and not a.vanilla,
        stream_eq=not (a.no_stream_eq or a.vanilla), stream_alpha=a.stream_alpha,
        head_eq=not (a.no_head_eq or a.vanilla), proj_eq=a.proj_eq and not a.vanilla,
        log2_clamp=tuple(a.log2_clamp) if a.log2_clamp else None,
        iters_w=a.iters_w, weight=a.weight, b_start=a.b_start, b_end=a.b_end, warmup=a.warmup,
        iters_a=a.iters_a, lr=a.lr, batch_size=a.calib_batch_size, rec_batch_size=a.rec_batch_size,
        seed=a.seed,
        rec_input="float" if a.sym else "quant")


def check_args(a: argparse.Namespace) -> str | None:
    """What is wrong with the flags, in one line, found before any model loading or data reading."""
    for flag, least in (("batch_size", 1), ("calib_batch_size", 1), ("rec_batch_size", 1), ("num_samples", 1),
                        ("max_val", 1), ("workers", 0)):
        v = getattr(a, flag)
        if v is not None and v < least:
            return f"--{flag} must be at least {least}, got {v}"
    if not 0 <= a.stream_alpha <= 1:
        return f"--stream_alpha must be in [0, 1], got {a.stream_alpha}"
    if a.crop_ratio is not None and not 0 < a.crop_ratio <= 1:
        # MIT's eval transform resizes to ceil(size / crop), then crops size: above 1 the crop is padded black
        return f"--crop_ratio must be in (0, 1] (0.95 for B0/B1, 1.0 for B2/B3), got {a.crop_ratio}"
    if a.output:
        out = Path(a.output)
        found = next(p for p in (out, *out.parents) if p.exists())
        if not found.is_dir():  # else the run would fail only when it writes, after all the work
            where = "is" if found == out else f"lies under {found}, which is"
            return f"--output {out} {where} an existing file; it must be a folder (for results.json, quantized.pt)"
    return None


def integer_model_reason(a: argparse.Namespace) -> str | None:
    """Why these flags give no integer model (the arithmetic the hardware runs); None when they do."""
    if not a.act_quant:
        return "weight-only run (no --act_quant): the hardware computes with quantized activations"
    if a.recipe != "hardware":
        return (f"--recipe {a.recipe} (asymmetric weights): golden/ and the hardware run the hardware recipe "
                "only")
    return None


def logit_scale(ir: dict, classes: int) -> np.ndarray:
    """The logit tensor's scale per class (the IR's ``tensors[graph_output]["scale"]``), float64."""
    s = ir["tensors"][ir["graph_output"]]["scale"]
    s = np.abs(np.asarray(s.detach().cpu().numpy() if hasattr(s, "detach") else s, dtype=np.float64)).reshape(-1)
    return np.broadcast_to(s if s.size > 1 else s.reshape(()), (classes,))


def evaluate_integer(a: argparse.Namespace, spec: ModelSpec, crop: float, int_model: dict, ir: dict,
                     fp_pred: dict, fq_pred: dict, distributed: bool, progress: bool) -> dict:
    """The integer model on the val images of the float evaluation, as uint8 pixels after the same
    resize and center crop (golden.images.pixel_folder): the results' integer keys.

    Under torchrun every rank holds the same quantized model, converts it and runs its shard of the
    images; the shards are gathered in dataset order, as predict() does for the float model.
    """
    pixels = pixel_folder(a.data_path, "val", spec.input_size, crop)
    if a.max_val:
        pixels = torch.utils.data.Subset(pixels, list(range(min(a.max_val, len(pixels)))))
    pix_loader = loader(pixels, a.batch_size, a.workers, distributed=distributed)
    ip = predict_integer(int_model, pix_loader, "integer", progress)
    if not torch.equal(ip["labels"], fp_pred["labels"]):  # both ImageFolders list val/ in the same order
        raise RuntimeError("the integer model's val images are not the float evaluation's (labels differ)")
    acc = accuracy(ip)
    codes = ip["logits"].numpy()
    deq = codes * logit_scale(ir, codes.shape[1])
    agree_fp = agreement(ip, fp_pred)
    return dict(integer_model=True, quant_top1=acc["top1"], quant_top5=acc["top5"], quant_agreement=agree_fp,
                agreement_int_vs_float=agree_fp, agreement_int_vs_fakequant=agreement(ip, fq_pred),
                int_logit_sqnr_db=sqnr_db(fp_pred["logits"].numpy(), deq),
                integer_conversion_notes=list(int_model["notes"]))


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def log(*args) -> None:
    if dist.is_main():
        print(*args, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    keep_freed_memory()
    if a.arch:
        if a.arch not in MODELS:
            parser.error(f"--arch {a.arch!r} is not a model name; use --model with one of {', '.join(MODELS)}")
        a.model = a.arch
    spec = get_spec(a.model)
    if a.input_size is not None and a.input_size != spec.input_size:
        parser.error(f"--input_size {a.input_size} does not match --model {a.model} "
                     f"(use --model {a.model.split('-')[0]}-r{a.input_size})")
    for flag, note in INERT_FLAGS.items():
        if getattr(a, flag):
            print(f"note: {note}", file=sys.stderr)
    problem = check_args(a)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        cfg = config_from_args(a)
    except ValueError as e:
        parser.error(str(e))
    try:
        return run(a, spec, cfg, argv)
    except UnreadableImageError as e:  # raised where a corrupt file is first read, possibly deep in a run
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(a: argparse.Namespace, spec: ModelSpec, cfg: QuantConfig, argv: list[str] | None) -> int:
    """Everything after the flags are checked: data, model, float evaluation, quantization, output."""
    distributed = dist.init_from_env()
    seed_all(a.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    crop = a.crop_ratio or spec.crop_ratio
    progress = not a.no_progress
    t0 = time.time()
    try:  # the data folder first: its errors need no checkpoint download
        val = image_folder(a.data_path, "val", spec.input_size, crop)
        train = image_folder(a.data_path, "train", spec.input_size, crop)
        if a.max_val:
            val = torch.utils.data.Subset(val, list(range(min(a.max_val, len(val)))))
        calib_set = calibration_subset(train, a.num_samples, a.seed)
        model = build_model(a.model, a.weight_url or MIT_CKPT_URL.format(name=a.model))
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    val_loader = loader(val, a.batch_size, a.workers, distributed=distributed)
    # Each rank decodes its shard of the calibration images; every rank then holds all of them.
    cal_loader = loader(calib_set, cfg.batch_size, a.workers, distributed=distributed)
    cal_images = dist.gather_tensors(torch.cat([x for x, _ in cal_loader]), cal_loader)
    log(f"model {a.model} ({model.num_classes} classes), {len(val)} val images, {len(cal_images)} calibration images")

    results: dict = dict(model=a.model, n_bits_w=a.n_bits_w, n_bits_a=a.n_bits_a, act_quant=a.act_quant,
                         techniques=cfg.techniques, corrections=cfg.corrections, recipe=cfg.recipe,
                         num_samples=a.num_samples,
                         iters_w=a.iters_w, iters_a=a.iters_a, n_val=len(val), world_size=dist.world()[1],
                         argv=sys.argv[1:] if argv is None else argv)
    no_integer = integer_model_reason(a)
    bits = f"W{a.n_bits_w}A{a.n_bits_a}" if a.act_quant else f"W{a.n_bits_w}A32"
    preds = {}
    # the float logits are kept for the integer model's logit SQNR
    fp_pred = predict(model, val_loader, "float", progress, keep_logits=no_integer is None)
    preds["float"] = fp_pred
    fp = accuracy(fp_pred)
    results.update(fp_top1=fp["top1"], fp_top5=fp["top5"])
    if a.test_before_calibration:
        log(f"Full-precision accuracy: top-1 {fp['top1']:.2f}  top-5 {fp['top5']:.2f}")

    def on_stage(stage: str, qm) -> None:
        if stage == "weight_only" and cfg.iters_w == 0 and not a.act_quant:
            return
        pr = predict(qm, val_loader, stage.replace("_", "-"), progress)
        acc = accuracy(pr)
        key = "wq" if stage == "weight_only" else "quant"
        preds[key] = pr
        # quant_* are the fake-quant figures until the integer model replaces them (below)
        results.update({f"{key}_top1": acc["top1"], f"{key}_top5": acc["top5"],
                        f"{key}_agreement": agreement(fp_pred, pr)})
        if key == "quant":
            results.update(fakequant_top1=acc["top1"], fakequant_top5=acc["top5"],
                           fakequant_agreement=results["quant_agreement"])
        what = f"W{a.n_bits_w}A32 (weight only)" if key == "wq" else (
            f"{bits} float32 fake-quant" if no_integer is None else bits)
        log(f"{what} accuracy: top-1 {acc['top1']:.2f}  top-5 {acc['top5']:.2f}  "
            f"(agreement with float {results[f'{key}_agreement']:.2f}%)")

    qm, report = quantize(model, [cal_images], cfg, on_stage=on_stage, progress=progress and dist.is_main())
    results["block_sqnr_db"] = report["block_sqnr_db"]
    results["log2_ranges"] = report.get("log2_ranges")
    results["timing"] = dict(report["timing"])  # a copy: quantized.pt keeps the report's own timing

    # What the hardware computes: the integer model of the quantized model, on the same val images.
    if no_integer is None:
        t = time.time()
        try:
            ir = to_ir(qm, a.model, cfg, report, with_state=False)
            int_model = golden_convert.from_ir(ir)
        except ValueError as e:  # e.g. no log2 divisor, or formats wider than the machine's
            no_integer = f"the quantized model has no integer model: {e}"
        else:
            results.update(evaluate_integer(a, spec, crop, int_model, ir, fp_pred, preds["quant"], distributed,
                                            progress))
            results["timing"]["integer_eval_s"] = time.time() - t
            log(f"{bits} integer model (the hardware) accuracy: top-1 {results['quant_top1']:.2f}  "
                f"top-5 {results['quant_top5']:.2f}  (agreement with float {results['agreement_int_vs_float']:.2f}%, "
                f"with fake-quant {results['agreement_int_vs_fakequant']:.2f}%; "
                f"logit SQNR vs float {results['int_logit_sqnr_db']:.2f} dB)")
    if no_integer is not None:
        results.update(integer_model=False, integer_model_reason=no_integer)
        log(f"integer model not evaluated: {no_integer}")
    results["seconds"] = time.time() - t0
    if dist.is_main():
        print(format_report(results), flush=True)
        if a.output:
            out = Path(a.output)
            out.mkdir(parents=True, exist_ok=True)
            save_quantized(out / "quantized.pt", qm, a.model, cfg, report)
            (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
            print(f"wrote {out / 'results.json'} and {out / 'quantized.pt'}")
    if distributed:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
