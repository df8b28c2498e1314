"""Run a whole network on the RTL machine under Verilator and compare it with golden/.

    python -m tb.run_network --quantized Q --image IMG --preset NAME --json F

compiles the quantized model for the preset with every tensor in DRAM (what the machine's staged
executors read and write), lays out the DRAM image, builds the machine (rtl/executors.py ``machine``,
cached by its Verilog), and runs the whole program on the image through the host driver
(host/machine.py: load, input, start, sleep on the interrupt, logits) over cocotbext-axi's AXI RAM
and AXI4-Lite master. ``F`` gets:

* ``logits`` (the machine's integer logits) and ``golden_logits`` (golden/'s integer model);
* ``bit_exact``; when not, ``first_difference``: the first operation whose output differs (read
  back from DRAM: every intermediate stays there), or where the machine stopped and why;
* ``cycles`` (the machine's cycle counter), ``busy`` (its per-engine busy counters), ``layers``
  (operations completed, of ``ops``);
* ``pysim_cycles``: pysim's price of the same program (arch/cost.py's model of the pipelined
  dataflow) -- the staged executors are a correctness-first machine, so the two are far apart;
  ``pysim_ratio`` says by how much;
* ``wall_s`` with ``build_s`` (Verilog + Verilator, 0 when cached), ``golden_s`` and ``sim_s``;
* with ``--profile N``: ``profile``, each operation's cycles on the machine (from CYCLES and OPS_DONE
  read every N cycles: each figure is within N of the truth) beside pysim's, and the same summed per
  opcode: where the machine and pysim differ.

Exit status 0 when bit-exact, 1 when not (or the machine stopped), 2 on bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from arch.regmap import ErrorCode

BASE = 0x10_0000_0000          # the DRAM image's bus address (above 4 GiB: every address bit used)


def run_network(ir, pixels, cfg, *, case: str = "network", pauses: float = 0.0, seed: int = 1,
                cycle_limit: int = 2_000_000_000, resolution: int | None = None, profile: int = 0) -> dict:
    from pysim.price import price
    from rtl.executors import EXECUTORS, machine
    from tb import replay
    from tb.harness import build, build_dir_for, run_cocotb

    t0 = time.monotonic()
    prog, model, image = replay.dram_program(ir, cfg, resolution)
    t_in = prog.tensors[prog.input]
    px = np.asarray(pixels)
    if px.dtype != np.uint8 or px.shape != tuple(t_in.shape):
        raise ValueError(f"the program takes one uint8 image of shape {tuple(t_in.shape)}, got {px.dtype} {px.shape}")
    want = replay.golden_final(prog, image, px)
    t_golden = time.monotonic()
    gen = {"executors": sorted(EXECUTORS)}
    build("machine", lambda: machine(cfg), cfg, gen)
    t_build = time.monotonic()
    bdir = build_dir_for("machine", cfg, gen)
    bdir.mkdir(parents=True, exist_ok=True)
    prog_path = prog.save(bdir / f"{case}.program.json")
    res = run_cocotb(unit="machine", make=lambda: machine(cfg), config=cfg, module="tb.machine_cocotb", case=case,
                     gen=gen, arrays={"image": image, "pixels": px}, seed=seed,
                     params={"runs": [{"name": "network", "program": str(prog_path), "image": "image",
                                       "cycle_limit": cycle_limit, "profile": profile}],
                             "base": BASE, "fault_base": BASE + (1 << 36), "program_offset": prog.program_addr,
                             "ops": len(prog.ops), "cycle_limit": cycle_limit, "pauses": pauses,
                             "latency": [0, 8] if pauses else [0, 0]})
    t_sim = time.monotonic()
    (r,) = res["runs"]
    got = np.frombuffer(Path(r["readback_file"]).read_bytes(), np.uint8)
    t_out = prog.tensors[prog.output]
    from arch.formats import tensor_format
    fmt = tensor_format(t_out.bits, t_out.signed)
    n_out = int(np.prod(t_out.shape))
    logits = fmt.unpack(got[t_out.addr:], n_out)
    golden_logits = fmt.unpack(want[t_out.addr:], n_out)
    pysim_cycles = int(price(prog)["cycles"])
    out = {
        "model": prog.model, "resolution": prog.resolution, "preset": cfg.name, "ops": len(prog.ops),
        "executors": sorted(EXECUTORS), "logits": logits.tolist(), "golden_logits": golden_logits.tolist(),
        "layers": r["counters"]["ops_done"], "cycles": r["counters"]["cycles"],
        "busy": {k: v for k, v in r["counters"].items() if k.endswith("_busy")},
        "pysim_cycles": pysim_cycles,
        "build_s": round(t_build - t_golden, 2), "golden_s": round(t_golden - t0, 2),
        "sim_s": round(t_sim - t_build, 2), "wall_s": round(t_sim - t0, 2),
    }
    if pysim_cycles and out["cycles"]:
        out["pysim_ratio"] = round(out["cycles"] / pysim_cycles, 2)
    if profile and r.get("samples") is not None:
        out["profile"] = op_profile(prog, r["samples"], out["cycles"], profile)
    st = r["status"]
    if r["hung"]:
        out["bit_exact"] = False
        out["first_difference"] = f"the machine did not finish within {cycle_limit:,} cycles"
    elif st["ERROR"]:
        code = r["error_code"]
        name = ErrorCode(code).name if code in ErrorCode._value2member_map_ else str(code)
        k = r["error_op"]
        op = prog.ops[k] if k < len(prog.ops) else None
        why = f"the machine stopped with {name} at operation {k}"
        if op is not None:
            why += f" ({op.opcode} {op.node})"
            if name == "BAD_OPCODE" and op.opcode not in EXECUTORS:
                why += f": this build has no executor for {op.opcode} (rtl/executors.py)"
        out["bit_exact"] = False
        out["first_difference"] = why
    else:
        out["bit_exact"] = bool(np.array_equal(logits, golden_logits))
        k = replay.first_bad_op(prog, got, want)
        out["first_difference"] = None if k is None else \
            f"operation {k} ({prog.ops[k].opcode} {prog.ops[k].node}) writes other values than golden"
        if k is not None:
            out["bit_exact"] = False
    return out


def op_profile(prog, samples, total: int, every: int) -> dict:
    """Each operation's cycles from ``[CYCLES, OPS_DONE]`` samples: the operations completed between two
    samples end evenly spaced between them; beside each, pysim's price; then both summed per opcode."""
    from pysim.price import price
    ends, prev_c, prev_d = [], 0, 0
    for c, d in list(samples) + [[total, len(prog.ops)]]:
        d = min(d, len(prog.ops))
        for j in range(prev_d, d):
            ends.append(prev_c + (c - prev_c) * (j - prev_d + 1) / (d - prev_d))
        prev_c, prev_d = max(prev_c, c), max(prev_d, d)
    ends = [total if i == len(prog.ops) - 1 else round(e) for i, e in enumerate(ends)]
    priced = {o["index"]: o["cycles"] for o in price(prog)["ops"]}
    ops, start = [], 0
    for op, end in zip(prog.ops, ends):
        ops.append({"index": op.index, "opcode": op.opcode, "node": op.node, "cycles": end - start,
                    "pysim": int(priced.get(op.index, 0))})
        start = end
    by = {}
    for o in ops:
        b = by.setdefault(o["opcode"], {"ops": 0, "cycles": 0, "pysim": 0})
        b["ops"] += 1
        b["cycles"] += o["cycles"]
        b["pysim"] += o["pysim"]
    return {"every": every, "ops": ops, "by_opcode": by}


def profile_table(p: dict) -> str:
    rows = sorted(p["by_opcode"].items(), key=lambda kv: -kv[1]["cycles"])
    total = sum(b["cycles"] for _, b in rows) or 1
    lines = [f"{'opcode':<14}{'ops':>5}{'machine cycles':>16}{'share':>7}{'pysim cycles':>14}{'ratio':>8}"]
    for name, b in rows:
        ratio = f"{b['cycles'] / b['pysim']:.1f}x" if b["pysim"] else "-"
        lines.append(f"{name:<14}{b['ops']:>5}{b['cycles']:>16,}{100 * b['cycles'] / total:>6.1f}%{b['pysim']:>14,}{ratio:>8}")
    return "\n".join(lines) + f"\n(per-operation figures within {p['every']:,} cycles; pysim: engine cycles of the operation)"


def summary(r: dict) -> str:
    head = (f"{r['model']} at {r['resolution']}x{r['resolution']} on the RTL machine ({r['preset']}): "
            f"{r['layers']}/{r['ops']} operations, {r['cycles']:,} cycles")
    verdict = "logits bit-exact with golden" if r["bit_exact"] else f"NOT bit-exact: {r['first_difference']}"
    p = f"; pysim prices the program at {r['pysim_cycles']:,} cycles" if r.get("pysim_cycles") else ""
    text = (f"{head}; {verdict}{p}\n"
            f"wall {r['wall_s']} s: golden {r['golden_s']} s, build {r['build_s']} s, simulation {r['sim_s']} s")
    if r.get("profile"):
        text += "\n" + profile_table(r["profile"])
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tb.run_network", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quantized", required=True, help="quantized.pt written by main_imagenet.py")
    ap.add_argument("--image", required=True, help="an RGB image file (resized and cropped as the model was evaluated)")
    ap.add_argument("--preset", default="tiny", help="accelerator preset (arch/config.py)")
    ap.add_argument("--scratch-kib", type=int, default=None,
                    help="the executors' scratch size (act_buffer_kib); the whole layer must fit")
    ap.add_argument("--pauses", type=float, default=0.0, help="random AXI pauses (0..1) and read latency")
    ap.add_argument("--resolution", type=int, default=None,
                    help="run the model at this input size instead of its own (the same weights; shorter runs)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="read the cycle and operation counters every N cycles: cycles per operation and opcode")
    ap.add_argument("--json", default=None, help="write the report here")
    args = ap.parse_args(argv)
    try:
        from arch.config import get_preset
        from golden import convert
        from golden.images import load_image
        if not Path(args.quantized).is_file():
            raise FileNotFoundError(f"--quantized {args.quantized}: no such file (run main_imagenet.py first)")
        if args.scratch_kib is not None and args.scratch_kib < 1:
            raise ValueError(f"--scratch-kib must be a positive number of KiB, got {args.scratch_kib}")
        if not 0.0 <= args.pauses < 1.0:
            raise ValueError(f"--pauses must lie in [0, 1), got {args.pauses}")
        if args.profile < 0:
            raise ValueError(f"--profile must be a number of cycles >= 1 (0: off), got {args.profile}")
        if args.resolution is not None and not 32 <= args.resolution <= 1024:
            raise ValueError(f"--resolution must lie in [32, 1024], got {args.resolution}")
        try:
            cfg = get_preset(args.preset)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        if args.scratch_kib:
            cfg = cfg.replace(act_buffer_kib=args.scratch_kib)
        ir = convert.read_ir(args.quantized)
        model = convert.from_ir(ir, cfg=cfg)
        pixels = load_image(args.image, args.resolution or model["resolution"], float(ir.get("crop_ratio", 1.0)))
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    r = run_network(ir, pixels, cfg, pauses=args.pauses, resolution=args.resolution, profile=args.profile)
    print(summary(r))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(r, indent=1))
    return 0 if r["bit_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
