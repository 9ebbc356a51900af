"""The model's layout against facenet's published weights files, and the registry."""

from __future__ import annotations

import pytest
import torch

from fakeface.models import WeightsError, create_model, default_preprocess, list_models, load_trunk_weights


def read_keys(path) -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        rows.append((key, dims, dtype))
    return rows


def facenet_state_dict(keys, drop=(), extra=None) -> dict:
    """A state_dict laid out exactly like facenet's VGGFace2 file, with seeded random values."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for key, shape, dtype in keys:
        if key in drop:
            continue
        sd[key] = (torch.randint(0, 100, shape, generator=g) if dtype == "int64"
                   else torch.randn(shape, generator=g, dtype=getattr(torch, dtype)))
    sd.update(extra or {})
    return sd


@pytest.fixture(scope="module")
def model():
    return create_model("inception_resnet_v1")


def test_keys_and_shapes_match_facenet(model, facenet_keys):
    ours = model.state_dict()
    theirs = [(k, s) for k, s, _ in read_keys(facenet_keys) if not k.startswith("logits.")]
    assert [(k, tuple(v.shape)) for k, v in ours.items() if not k.startswith("logits.")] == theirs
    assert tuple(ours["logits.weight"].shape) == (1, 512)  # one logit: P(fake) = sigmoid(logit)


def test_parameter_count(model):
    trunk = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("logits."))
    assert trunk == 23_482_624


@pytest.mark.parametrize("size", [80, 160])
def test_forward_shape_and_finite(model, size):
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 1) and torch.isfinite(out).all()


def test_loads_facenet_vggface2_file(model, facenet_keys, tmp_path):
    keys = read_keys(facenet_keys)
    # Published files may lack num_batches_tracked; their 8631-class logits are dropped.
    sd = facenet_state_dict(keys, drop={k for k, _, _ in keys if k.endswith("num_batches_tracked")})
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save(sd, path)
    m = create_model("inception_resnet_v1")
    head_before = m.logits.weight.clone()
    load_trunk_weights(m, "inception_resnet_v1", path)
    assert torch.equal(m.state_dict()["repeat_2.9.branch1.2.conv.weight"], sd["repeat_2.9.branch1.2.conv.weight"])
    assert torch.equal(m.last_bn.running_var, sd["last_bn.running_var"])
    assert torch.equal(m.logits.weight, head_before)


def test_facenet_file_with_wrong_keys_names_them(facenet_keys, tmp_path):
    keys = read_keys(facenet_keys)
    sd = facenet_state_dict(keys, drop={"mixed_6a.branch0.conv.weight"}, extra={"extra.layer": torch.zeros(1)})
    sd["last_linear.weight"] = torch.zeros(256, 1792)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(WeightsError) as e:
        load_trunk_weights(create_model("inception_resnet_v1"), "inception_resnet_v1", path)
    msg = str(e.value)
    assert "mixed_6a.branch0.conv.weight" in msg and "extra.layer" in msg and "last_linear.weight" in msg


def test_unreadable_weights_file(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read"):
        load_trunk_weights(create_model("inception_resnet_v1"), "inception_resnet_v1", path)
    with pytest.raises(WeightsError, match="not found"):
        load_trunk_weights(create_model("inception_resnet_v1"), "inception_resnet_v1", tmp_path / "nope.pt")


def test_registry():
    assert "inception_resnet_v1" in list_models()
    pre = default_preprocess("inception_resnet_v1")
    assert pre.mean == (127.5,) * 3 and pre.std == (128.0,) * 3 and pre.input_size == 160
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet9000")
