"""main_imagenet.py end to end on a tiny synthetic ImageNet-layout folder, and its error handling."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quant.cli import main

REPO = Path(__file__).resolve().parents[1]
FAST = ["--model", "b0-r224", "--n_bits_w", "8", "--channel_wise", "--n_bits_a", "8", "--act_quant",
        "--num_samples", "8", "--calib_batch_size", "4", "--batch_size", "8", "--workers", "0", "--no_progress"]


def test_cli_writes_results_and_quantized(synthetic_folder, seeded_b0_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(FAST + ["--data_path", str(synthetic_folder), "--weight_url", str(seeded_b0_ckpt),
                      "--iters_w", "2", "--iters_a", "2", "--test_before_calibration", "--output", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Full-precision accuracy" in text and "output SQNR per block" in text
    assert "W8A8 float32 fake-quant accuracy" in text and "W8A8 integer model (the hardware) accuracy" in text
    r = json.loads((out / "results.json").read_text())
    for key in ("model", "n_bits_w", "n_bits_a", "fp_top1", "quant_top1", "quant_top5", "techniques", "seconds",
                "wq_top1", "quant_agreement", "fakequant_top1", "fakequant_top5", "fakequant_agreement",
                "agreement_int_vs_float", "agreement_int_vs_fakequant", "int_logit_sqnr_db"):
        assert key in r, key
    assert r["techniques"] == ["migration", "shift", "log2"] and r["model"] == "b0-r224"
    assert r["integer_model"] is True and "integer_eval_s" in r["timing"]
    assert "quantized W8A8 (integer, the hardware)" in text
    assert 0 <= r["quant_top1"] <= 100 and (out / "quantized.pt").stat().st_size > 100_000


@pytest.mark.parametrize("extra,msg", [
    (["--input_size", "256"], "does not match --model b0-r224"),
    (["--n_bits_w", "9"], "n_bits_w 9 is not supported"),
    (["--arch", "resnet18"], "is not a model name"),
])
def test_cli_rejects_bad_flags(synthetic_folder, extra, msg, capsys):
    with pytest.raises(SystemExit) as e:
        main(FAST + ["--data_path", str(synthetic_folder)] + extra)
    assert e.value.code == 2 and msg in capsys.readouterr().err


def test_cli_reports_bad_data_path(tmp_path, seeded_b0_ckpt, capsys):
    assert main(FAST + ["--data_path", str(tmp_path / "nowhere"), "--weight_url", str(seeded_b0_ckpt)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_no_log2_mantissa_gives_the_powers_of_two():
    from quant.cli import build_parser, config_from_args
    args = ["--data_path", "x", "--model", "b0-r224"]
    assert config_from_args(build_parser().parse_args(args)).log2_frac == 1
    assert config_from_args(build_parser().parse_args(args + ["--no_log2_mantissa"])).log2_frac == 0


def test_equalization_switches():
    from quant.cli import build_parser, check_args, config_from_args
    args = ["--data_path", "x", "--model", "b0-r224"]
    cfg = lambda extra: config_from_args(build_parser().parse_args(args + extra))  # noqa: E731
    assert (cfg([]).stream_eq, cfg([]).stream_alpha, cfg([]).head_eq, cfg([]).proj_eq) == (True, 1.0, True, False)
    assert cfg(["--no_stream_eq"]).stream_eq is False and cfg(["--no_head_eq"]).head_eq is False
    assert cfg(["--proj_eq"]).proj_eq is True
    assert cfg([]).corrections == ["stream equalization", "head equalization", "bias correction"]
    assert not any(getattr(cfg(["--vanilla", "--proj_eq"]), f) for f in ("stream_eq", "head_eq", "proj_eq"))
    assert "--stream_alpha must be in [0, 1]" in check_args(build_parser().parse_args(args + ["--stream_alpha", "2"]))


def test_vanilla_switches_all_techniques_off(synthetic_folder, seeded_b0_ckpt, tmp_path):
    out = tmp_path / "v"
    assert main(FAST + ["--data_path", str(synthetic_folder), "--weight_url", str(seeded_b0_ckpt), "--vanilla",
                        "--iters_w", "0", "--iters_a", "0", "--output", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["techniques"] == [] and r["corrections"] == []
    # the hardware divides by shifts only: without the log2 divisor there is no integer model
    assert r["integer_model"] is False and "log2" in r["integer_model_reason"]
    assert r["quant_top1"] == r["fakequant_top1"]


def test_torchrun_two_processes_match_one(synthetic_folder, seeded_b0_ckpt, tmp_path):
    """Sharded evaluation and calibration gathering under torchrun give the single-process numbers."""
    args = FAST + ["--data_path", str(synthetic_folder), "--weight_url", str(seeded_b0_ckpt),
                   "--iters_w", "0", "--iters_a", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"n{n}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
               str(REPO / "main_imagenet.py")] + args + ["--output", str(out)]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        runs[n] = json.loads((out / "results.json").read_text())
    assert runs[2]["world_size"] == 2
    for key in ("fp_top1", "fp_top5", "quant_top1", "quant_top5", "quant_agreement", "fakequant_top1",
                "agreement_int_vs_float", "agreement_int_vs_fakequant", "integer_model"):
        assert runs[1][key] == runs[2][key], key
    assert runs[2]["integer_model"] is True
    assert runs[1]["int_logit_sqnr_db"] == pytest.approx(runs[2]["int_logit_sqnr_db"], rel=1e-5)
