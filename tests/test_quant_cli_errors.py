"""main_imagenet.py refuses bad flags and unreadable images with one `error:` line on stderr, no traceback."""
import shutil

import pytest

from quant.cli import build_parser, check_args, main
from tests.test_quant_cli import FAST


def _error(capsys) -> str:
    """The one line main() printed to stderr."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("extra,msg", [
    (["--batch_size", "0"], "--batch_size must be at least 1, got 0"),
    (["--batch_size", "-4"], "--batch_size must be at least 1, got -4"),
    (["--calib_batch_size", "0"], "--calib_batch_size must be at least 1, got 0"),
    (["--rec_batch_size", "-1"], "--rec_batch_size must be at least 1, got -1"),
    (["--num_samples", "0"], "--num_samples must be at least 1, got 0"),
    (["--max_val", "-1"], "--max_val must be at least 1, got -1"),
    (["--max_val", "0"], "--max_val must be at least 1, got 0"),
    (["--workers", "-1"], "--workers must be at least 0, got -1"),
    (["--crop_ratio", "0"], "--crop_ratio must be in (0, 1]"),
    (["--crop_ratio", "-0.9"], "--crop_ratio must be in (0, 1]"),
    (["--crop_ratio", "1.2"], "--crop_ratio must be in (0, 1]"),
])
def test_bad_flag_values_stop_before_any_work(tmp_path, capsys, extra, msg):
    # Neither the data folder nor the checkpoint exists: the flag is what gets reported.
    rc = main(FAST + ["--data_path", str(tmp_path / "nowhere"), "--weight_url", str(tmp_path / "none.pt")] + extra)
    assert rc == 2 and msg in _error(capsys)


@pytest.mark.parametrize("under", [False, True])
def test_output_that_is_a_file_stops_before_any_work(tmp_path, capsys, under):
    f = tmp_path / "results"
    f.write_text("not a folder")
    out = f / "run" if under else f
    rc = main(FAST + ["--data_path", str(tmp_path / "nowhere"), "--output", str(out)])
    line = _error(capsys)
    assert rc == 2 and f"--output {out}" in line and "existing file" in line
    assert (f"lies under {f}" in line) == under


def test_good_flag_values_pass(tmp_path):
    a = build_parser().parse_args(FAST + ["--data_path", "x", "--crop_ratio", "1.0", "--max_val", "1",
                                          "--output", str(tmp_path / "new" / "run")])
    assert check_args(a) is None


@pytest.mark.parametrize("split,kind,workers", [("train", "garbage", 0), ("val", "garbage", 1),
                                                ("train", "truncated", 1), ("val", "truncated", 0)])
def test_unreadable_image_is_named_in_one_line(synthetic_folder, seeded_b0_ckpt, tmp_path, capsys,
                                               split, kind, workers):
    data = shutil.copytree(synthetic_folder, tmp_path / "data")
    good = (data / split / "c0" / "0.png").read_bytes()
    bad = data / split / "c0" / "n0000_broken.JPEG"
    bad.write_bytes(b"\x00garbage, not a JPEG\xff" * 8 if kind == "garbage" else good[:len(good) // 2])
    num_samples = "25" if split == "train" else "8"  # all of train/ (24 images and the broken one)
    rc = main(FAST + ["--data_path", str(data), "--weight_url", str(seeded_b0_ckpt), "--num_samples", num_samples,
                      "--workers", str(workers), "--iters_w", "0", "--iters_a", "0"])
    line = _error(capsys)
    assert rc == 2 and f"{bad} is not a readable image" in line
