import pytest

from quant.data import calibration_subset, check_split, eval_transform, image_folder


def test_layout_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_split(tmp_path / "missing", "val")
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="has no val/ folder.*found: train"):
        check_split(tmp_path, "val")
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="no class subfolders"):
        check_split(tmp_path, "val")
    (tmp_path / "val" / "n01").mkdir()
    (tmp_path / "val" / "n01" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no images"):
        check_split(tmp_path, "val")


def test_mit_transform_sizes():
    resize, crop = eval_transform(224, 0.95).transforms[0].transforms    # the hardware's pixel path, then normalise
    assert resize.size == 236 and crop.size == (224, 224)
    assert eval_transform(288, 1.0).transforms[0].transforms[0].size == 288


def test_calibration_subset_is_seeded(synthetic_folder):
    ds = image_folder(synthetic_folder, "train", 224, 0.95)
    a = calibration_subset(ds, 8, 1005).indices
    assert a == calibration_subset(ds, 8, 1005).indices and a != calibration_subset(ds, 8, 7).indices
    with pytest.raises(ValueError, match="exceeds the 24 training images"):
        calibration_subset(ds, 25, 0)
