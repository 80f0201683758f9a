"""The dilated ResNet backbone: shapes, torchvision's names and counts, checkpoint loading."""

import pickle

import pytest
import torch
from torch import nn

from dsspn_cli.errors import UserError
from dsspn_cli.model.backbone import (
    BasicBlock,
    Bottleneck,
    FrozenBatchNorm2d,
    ResNet,
    build_backbone,
    load_backbone_weights,
    resnet18,
    resnet50,
    resnet101,
)

torch.set_num_threads(2)

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_keys(layers, bottleneck):
    """torchvision's ResNet state_dict keys without fc.*, written out from its known layout."""
    keys = ["conv1.weight"] + [f"bn1.{k}" for k in BN_KEYS]
    convs = (1, 2, 3) if bottleneck else (1, 2)
    for stage, n in enumerate(layers, start=1):
        for b in range(n):
            p = f"layer{stage}.{b}"
            for c in convs:
                keys.append(f"{p}.conv{c}.weight")
                keys += [f"{p}.bn{c}.{k}" for k in BN_KEYS]
            # resnet18's layer1 keeps 64 channels at stride 1: no projection there.
            if b == 0 and (bottleneck or stage > 1):
                keys.append(f"{p}.downsample.0.weight")
                keys += [f"{p}.downsample.1.{k}" for k in BN_KEYS]
    return keys


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def one_line_error(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# ---------------------------------------------------------------------------------------------
# Shapes and names


@pytest.mark.parametrize("ctor, channels", [(resnet18, 512), (resnet50, 2048)])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_shape_and_stride(ctor, channels, output_stride):
    model = ctor(output_stride=output_stride).eval()
    assert model.out_channels == channels
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    side = 64 // output_stride
    assert out.shape == (1, channels, side, side)


def test_forward_features_gives_layer3():
    model = resnet18(output_stride=16).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert torch.equal(feats["layer4"], model(x))
    assert feats["layer3"].shape == (1, 256, 4, 4)
    assert model.feature_channels["layer3"] == 256


def test_dilation_follows_torchvision():
    """The first block of a dilated stage keeps the previous dilation on its 3x3 conv."""
    model = resnet50(output_stride=8)
    d = {name: m.dilation[0] for name, m in model.named_modules()
         if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)}
    assert d["layer2.0.conv2"] == 1 and model.layer2[0].conv2.stride == (2, 2)
    assert d["layer3.0.conv2"] == 1 and model.layer3[0].conv2.stride == (1, 1)
    assert all(d[f"layer3.{i}.conv2"] == 2 for i in range(1, 6))
    assert d["layer4.0.conv2"] == 2 and model.layer4[0].conv2.stride == (1, 1)
    assert d["layer4.1.conv2"] == d["layer4.2.conv2"] == 4
    assert model.layer4[0].downsample[0].stride == (1, 1)
    os16 = resnet50(output_stride=16)
    assert os16.layer3[0].conv2.stride == (2, 2) and os16.layer3[5].conv2.dilation == (1, 1)
    assert os16.layer4[0].conv2.dilation == (1, 1) and os16.layer4[2].conv2.dilation == (2, 2)
    assert os16.layer4[2].conv2.padding == (2, 2)


def test_parameter_counts_match_torchvision_without_fc():
    assert n_params(resnet101()) == 44_549_160 - (2048 * 1000 + 1000) == 42_500_160
    assert n_params(resnet50()) == 23_508_032
    assert n_params(resnet18()) == 11_176_512
    assert not hasattr(resnet18(), "fc") and not hasattr(resnet18(), "avgpool")


def test_state_dict_keys_are_torchvisions():
    assert list(resnet50().state_dict()) == torchvision_keys((3, 4, 6, 3), bottleneck=True)
    assert list(resnet18().state_dict()) == torchvision_keys((2, 2, 2, 2), bottleneck=False)
    # Frozen norm: the same names, less num_batches_tracked.
    frozen = [k for k in torchvision_keys((3, 4, 6, 3), True) if "num_batches" not in k]
    assert list(resnet50(norm="frozen").state_dict()) == frozen


def test_initialisation_like_torchvision():
    model = ResNet(BasicBlock, [1, 1, 1, 1])
    bn = model.layer1[0].bn1
    assert torch.equal(bn.weight, torch.ones(64)) and torch.equal(bn.bias, torch.zeros(64))
    w = model.layer4[0].conv2.weight          # fan_out = 512 * 9: std sqrt(2 / 4608)
    assert abs(w.std().item() - (2 / (512 * 9)) ** 0.5) < 0.002
    assert isinstance(ResNet(Bottleneck, [1, 1, 1, 1], norm="frozen").bn1, FrozenBatchNorm2d)


# ---------------------------------------------------------------------------------------------
# Loading


def torchvision_checkpoint(path, arch="resnet18"):
    """A file laid out as torchvision's: a plain state dict with fc, random non-trivial BN."""
    model = {"resnet18": resnet18, "resnet50": resnet50}[arch](norm="batch")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0, 0.1, generator=gen)
                m.running_mean.normal_(0, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
                m.num_batches_tracked.fill_(1000)
    sd = model.state_dict()
    sd["fc.weight"] = torch.randn(1000, model.out_channels)
    sd["fc.bias"] = torch.randn(1000)
    torch.save(sd, path)
    return sd


def test_pretrained_loads_into_frozen_model(tmp_path):
    path = tmp_path / "resnet18-f37072fd.pth"
    sd = torchvision_checkpoint(path)
    model = build_backbone("resnet18", output_stride=8, pretrained=path)
    loaded = model.state_dict()
    assert set(loaded) == {k for k in sd if not k.startswith("fc.")
                           and not k.endswith("num_batches_tracked")}
    assert all(torch.equal(loaded[k], sd[k]) for k in loaded)
    assert all(isinstance(m, FrozenBatchNorm2d) for m in model.modules()
               if "bn" in type(m).__name__.lower() or "norm" in type(m).__name__.lower())

    # Statistics frozen: train() and eval() compute the same thing.
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y_train = model.train()(x)
        y_eval = model.eval()(x)
    assert torch.allclose(y_train, y_eval)

    # Only convolution weights train.
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    convs = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert trainable and set(trainable) == convs


def test_frozen_bn_matches_batchnorm_in_eval():
    bn = nn.BatchNorm2d(8)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.normal_(), bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 1.5)
    frozen = FrozenBatchNorm2d(8)
    frozen.load_state_dict(bn.state_dict())   # num_batches_tracked is dropped
    x = torch.randn(2, 8, 5, 5)
    assert torch.allclose(frozen(x), bn.eval()(x), atol=1e-6)


def test_frozen_backbone_stays_in_the_autocast_dtype():
    """Under bfloat16 autocast every activation of a frozen-BN backbone stays bfloat16 (a
    float32 scale would promote each one back to float32), and the result stays close to the
    float32 one; outside autocast it is float32 throughout."""
    torch.manual_seed(0)
    model = resnet18(output_stride=16, norm="frozen").eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 1.5)
    dtypes = set()
    hooks = [m.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
             for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        assert dtypes == {torch.float32}
        dtypes.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    for hook in hooks:
        hook.remove()
    assert dtypes == {torch.bfloat16} and low.dtype == torch.bfloat16
    error = (low.float() - reference).abs().mean() / reference.abs().mean()
    assert error < 0.05


def test_load_accepts_wrapped_state_dicts(tmp_path):
    sd = resnet18().state_dict()
    path = tmp_path / "wrapped.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    summary = load_backbone_weights(resnet18(norm="frozen"), path)
    assert "loaded 100 tensors" in summary


def test_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "resnet18.pth"
    path.write_text("this is not a checkpoint\n")
    with pytest.raises(UserError) as exc:
        build_backbone("resnet18", pretrained=path)
    msg = one_line_error(exc)
    assert str(path) in msg and "not a PyTorch checkpoint" in msg


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(UserError) as exc:
        build_backbone("resnet50", pretrained=path)
    msg = one_line_error(exc)
    assert str(path) in msg and "no such file" in msg


def test_resnet50_file_into_resnet101_names_the_architecture(tmp_path):
    path = tmp_path / "resnet50-0676ba61.pth"
    torchvision_checkpoint(path, "resnet50")
    with pytest.raises(UserError) as exc:
        build_backbone("resnet101", pretrained=path)
    msg = one_line_error(exc)
    assert str(path) in msg and "layer3.6.conv1.weight" in msg
    assert "looks like resnet50 weights; use --backbone resnet50" in msg


def test_shape_mismatch(tmp_path):
    sd = resnet18().state_dict()
    sd["layer2.0.conv1.weight"] = torch.zeros(128, 64, 1, 1)
    path = tmp_path / "odd.pth"
    torch.save(sd, path)
    with pytest.raises(UserError) as exc:
        load_backbone_weights(resnet18(), path)
    msg = one_line_error(exc)
    assert "layer2.0.conv1.weight" in msg and "wrong shape" in msg


class Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


@pytest.mark.parametrize("save", ["torch", "pickle"])
def test_pickle_with_code_is_refused_without_running_it(tmp_path, save):
    # The payload is real: a plain unpickle does run it.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(Payload(proof)))
    assert proof.exists()

    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    if save == "torch":
        torch.save({"conv1.weight": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    with pytest.raises(UserError) as exc:
        build_backbone("resnet18", pretrained=path)
    msg = one_line_error(exc)
    assert str(path) in msg and "refused" in msg
    assert not marker.exists()


def test_bad_names_and_strides():
    with pytest.raises(UserError, match="unknown backbone"):
        build_backbone("vgg16")
    with pytest.raises(UserError, match="output stride"):
        build_backbone("resnet18", output_stride=4)
