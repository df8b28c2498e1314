import pytest
import torch

from quant.models import MODELS, build_model, create_model, get_spec, load_state_dict, remap_mit_state_dict
from tests.assets import PROXY_MODEL, assets_dir


def test_registry_names_and_crops():
    assert set(MODELS) == {f"b{b}-r{r}" for b in range(4) for r in (224, 256, 288)}
    assert get_spec("b1-r224").crop_ratio == 0.95 and get_spec("b2-r256").crop_ratio == 1.0
    with pytest.raises(ValueError, match="unknown model 'b9-r224'.*b0-r224"):
        get_spec("b9-r224")


def test_mit_checkpoint_loads_with_inferred_classes_and_mit_eps():
    model = build_model("b0-r224", str(assets_dir() / PROXY_MODEL))
    assert model.num_classes == 10
    eps = {m.eps for m in model.modules() if type(m).__name__ == "LiteMLA"}
    assert eps == {1e-15}
    # Every MIT tensor landed somewhere: the remapped keys equal the model's own.
    sd = load_state_dict(assets_dir() / PROXY_MODEL)
    own = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(sd) == own
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_mismatched_checkpoint_names_first_keys(seeded_b0_ckpt):
    with pytest.raises(ValueError) as e:
        build_model("b1-r224", str(seeded_b0_ckpt))
    msg = str(e.value)
    assert "does not fit the model" in msg and "shape mismatch" in msg and "stem.in_conv.conv.weight" in msg


def test_missing_file_and_offline_url_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_model("b0-r224", str(tmp_path / "nope.pt"))
    with pytest.raises(RuntimeError, match="pass its local path to --weight_url"):
        build_model("b0-r224", "http://127.0.0.1:9/b0.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        build_model("b0-r224", str(bad))


def test_remap_rejects_foreign_keys():
    with pytest.raises(ValueError, match="does not look like an MIT"):
        remap_mit_state_dict({"backbone.foo": torch.zeros(1), "decoder.x": torch.zeros(1)})


def test_seeded_models_are_deterministic():
    a, b = create_model("b0-r224", 10, seed=3), create_model("b0-r224", 10, seed=3)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
