"""Packed deployable binary form: round trip through a file, equal logits, size = the counter's."""
import os
import random

import numpy as np
import pytest
import torch
from mmengine.registry import MODELS
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.models.necks import GlobalAveragePooling

import nasbnn_mm  # noqa: F401
from nasbnn_mm.models import build_static_backbone, subnet_classifier_state
from nasbnn_mm.models.packed import (PACKED_FORMAT, DeployedBinaryConv2d, NASBNNDeployedSubnet, PackedFormatError,
                                     load_packed, pack_classifier, pack_subnet, packed_layout, save_packed,
                                     unpack_subnet)
from nasbnn_mm.space import SearchSpace, profile_arch

SMALL_SPACE = 'configs/_base_/search_spaces/cifar_small.py'
# file size = payload (the counter's deployed size + < 1 byte of padding per binary conv) + the
# torch.save container (zip records of 3 tensors, pickled meta with the search space): < 4 KiB
CONTAINER_OVERHEAD = 4096


@pytest.fixture(scope='module')
def space():
    return SearchSpace.build(SMALL_SPACE)


def randomised_supernet_classifier(space):
    """A supernet classifier of ``space`` with everything a deployment stores made non-trivial:
    BN statistics and affine, RSign / RPReLU vectors, kernel / Bi-Transformation matrices,
    LSQ steps initialised from the weights (eval mode)."""
    torch.manual_seed(0)
    clf = MODELS.build(
        dict(
            type='nasbnn.SandwichClassifier',
            backbone=dict(type='nasbnn.NASBNNSupernet', search_space=space.to_dict()),
            neck=dict(type='mmpretrain.GlobalAveragePooling'),
            head=dict(type='nasbnn.SlicedLinearClsHead', num_classes=10, in_channels=max(space.stages[-1].widths))))
    with torch.no_grad():
        for n, p in clf.named_parameters():
            if 'transform' in n:
                p.add_(0.1 * torch.randn_like(p))
            elif n.endswith(('.bias', '.bias_in', '.bias_out')):
                p.copy_(0.2 * torch.randn_like(p))
            elif n.endswith('.slope'):
                p.uniform_(0.0, 0.5)
            elif '.bn' in n and n.endswith('.weight'):
                p.uniform_(0.5, 1.5)
        for m in clf.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        clf.backbone.stem.conv.init_step()
    return clf.eval()


@pytest.fixture(scope='module')
def supernet_classifier(space):
    """:func:`randomised_supernet_classifier` of the cifar_small space."""
    return randomised_supernet_classifier(space)


def static_classifier(clf, arch):
    """The exported static model: ImageClassifier(NASBNNSubnet, GAP, LinearClsHead)."""
    net = ImageClassifier(
        backbone=build_static_backbone(clf.backbone, arch),
        neck=GlobalAveragePooling(),
        head=LinearClsHead(10, arch.stage_out_channels[-1]))
    net.load_state_dict(subnet_classifier_state(clf, arch), strict=True)
    return net.eval()


def archs(space):
    return [('largest', space.largest()), ('smallest', space.smallest()), ('random', space.sample(random.Random(3)))]


@pytest.mark.parametrize('which', ['largest', 'smallest', 'random'])
def test_round_trip_through_file_gives_equal_logits_and_counter_size(supernet_classifier, space, which, tmp_path):
    arch = dict(archs(space))[which]
    clf = supernet_classifier
    static = static_classifier(clf, arch)
    packed = pack_subnet(subnet_classifier_state(clf, arch), arch, {'search_space': space.to_dict(), 'note': 'x'})
    path = save_packed(packed, str(tmp_path / 'subnet_packed.pth'))

    # the file is tensors + plain values only
    loaded = torch.load(path, map_location='cpu', weights_only=True)
    assert set(loaded['state_dict']) == {'binary_bits', 'stem_int8', 'fp32'}
    assert loaded['state_dict']['binary_bits'].dtype == torch.uint8
    assert loaded['state_dict']['stem_int8'].dtype == torch.int8
    assert loaded['meta']['format'] == PACKED_FORMAT and loaded['meta']['note'] == 'x'
    assert loaded['meta']['arch'] == arch.to_text()

    deployed = load_packed(path)
    assert isinstance(deployed.backbone, NASBNNDeployedSubnet)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, out = static(x, mode='tensor'), deployed(x, mode='tensor')
    assert ref.abs().max() > 1  # non-trivial logits
    # BN folded into scale / shift rounds differently from BN (float32 results also differ across
    # CPUs and oneDNN kernels): equal up to a tolerance relative to the logits' magnitude
    assert (out - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()

    # the deployed weights are the static model's effective weights, bit for bit
    with torch.no_grad():
        c = arch.stem.width
        assert torch.equal(
            deployed.backbone.stem.conv.quantized_weight(c), static.backbone.stem.conv.quantized_weight(c))
        for si, li, ch in arch.layers():
            s_layer, d_layer = static.backbone.stages[si][li], deployed.backbone.stages[si][li]
            cin = s_layer.sign1.bias.numel()
            for name, args in (('conv_kxk', (cin, cin, ch.kernel, ch.groups)), ('conv_1x1', (cin, ch.width, 1, 1))):
                assert torch.equal(
                    getattr(d_layer, name).effective_weight(*args),
                    getattr(s_layer, name).effective_weight(*args)), (si, li, name)
        q = loaded['state_dict']['stem_int8']
        assert -128 <= int(q.min()) and int(q.max()) <= 127 and q.abs().max() > 64  # uses the 8-bit range

    # payload = the counter's 1-bit deployed size (+ < 1 byte of padding per conv); file = payload + container
    rep = profile_arch(arch, 32, 10, space)
    payload = sum(t.numel() * t.element_size() for t in loaded['state_dict'].values())
    n_convs = 2 * sum(arch.depths)
    assert rep.size_bytes <= payload < rep.size_bytes + n_convs
    size = os.path.getsize(path)
    assert payload < size <= payload + CONTAINER_OVERHEAD, (size, payload)
    assert size <= 1.05 * rep.size_bytes + CONTAINER_OVERHEAD


def test_layout_counts_equal_the_ops_counter(space):
    rng = random.Random(0)
    for arch in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(20)]:
        layout = packed_layout(arch, 10)
        rep = profile_arch(arch, 32, 10, space)
        assert sum(s.numel for s in layout if s.kind == 'bits') == rep.binary_params
        assert sum(s.numel for s in layout if s.kind == 'int8') == rep.int8_params
        assert sum(s.numel for s in layout if s.kind == 'fp32') == rep.fp_params


def test_bits_are_numpy_packbits_of_the_signs(supernet_classifier, space):
    arch = space.smallest()
    packed = pack_subnet(subnet_classifier_state(supernet_classifier, arch), arch, {'search_space': space.to_dict()})
    static = static_classifier(supernet_classifier, arch)
    conv = static.backbone.stages[0][0].conv_kxk
    c = arch.stem.width
    with torch.no_grad():
        w = conv.effective_weight(c, c, arch.stages[0][0].kernel, arch.stages[0][0].groups)
    expect = np.packbits((w > 0).flatten().numpy())
    assert np.array_equal(packed['state_dict']['binary_bits'][:len(expect)].numpy(), expect)
    assert packed['meta']['binary_shapes'][0] == [*w.shape, arch.stages[0][0].groups]
    # first fp32 entries: stem step, ...; the first layer's alpha follows the stem's 6 vectors and RSign1
    alpha = packed['state_dict']['fp32'][7 * c:8 * c]
    assert torch.equal(alpha, w.abs().flatten(1).amax(1))


def test_pack_classifier_and_registry_build(supernet_classifier, space):
    arch = space.sample(random.Random(5))
    static = static_classifier(supernet_classifier, arch)
    sd, arch2, meta = unpack_subnet(pack_classifier(static, {'source': 'test'}))
    assert arch2 == arch and meta['source'] == 'test' and 'wn_eps' not in meta
    model = MODELS.build(dict(type='nasbnn.NASBNNDeployedSubnet', arch=arch.to_text(), search_space=space.to_dict()))
    model.load_state_dict({k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}, strict=True)
    assert isinstance(model.stages[0][0].conv_1x1, DeployedBinaryConv2d)
    with pytest.raises(RuntimeError, match='inference only'):
        model.train()(torch.randn(1, 3, 32, 32))
    # a deployed state dict cannot be mistaken for a static one
    with pytest.raises(RuntimeError, match='sign|alpha|Missing'):
        static.load_state_dict(sd, strict=True)


def test_bad_inputs_give_one_line_errors(supernet_classifier, space):
    arch = space.smallest()
    sd = subnet_classifier_state(supernet_classifier, arch)
    meta = {'search_space': space.to_dict()}
    with pytest.raises(PackedFormatError, match=r"^state_dict: missing 'head.fc.weight'"):
        pack_subnet({k: v for k, v in sd.items() if k != 'head.fc.weight'}, arch, meta)
    with pytest.raises(PackedFormatError, match=r'^state_dict: backbone keys do not match'):
        pack_subnet(sd, space.largest(), meta)
    with pytest.raises(PackedFormatError, match=r'^meta.wn_unbiased'):
        pack_subnet(sd, arch, dict(meta, wn_unbiased='yes'))
    packed = pack_subnet(sd, arch, meta)
    with pytest.raises(PackedFormatError, match=r"^packed meta.format: 'other' not allowed"):
        unpack_subnet({'meta': dict(packed['meta'], format='other'), 'state_dict': packed['state_dict']})
    short = dict(packed['state_dict'], fp32=packed['state_dict']['fp32'][:-1])
    with pytest.raises(PackedFormatError, match=r'^packed state_dict.fp32: .* \(allowed: torch.float32 with \d+'):
        unpack_subnet({'meta': packed['meta'], 'state_dict': short})
    with pytest.raises(PackedFormatError, match=r'^packed: not allowed'):
        unpack_subnet({'state_dict': {}})


def test_weight_that_bits_cannot_store_is_refused(supernet_classifier, space):
    """A normalized weight exactly 0 inside a channel has sign 0: refuse rather than change it.
    A whole zero channel (alpha 0) is stored exactly."""
    arch = space.smallest()
    sd = subnet_classifier_state(supernet_classifier, arch)
    key = 'backbone.stages.0.0.conv_kxk.weight'
    w = sd[key].clone()
    row = torch.zeros(w[0].numel())
    row[0], row[1] = -1.0, 1.0  # mean 0, one +1, one -1, the rest exactly 0 after normalization
    w[0] = row.view_as(w[0])
    w[1] = 0.25  # constant channel: normalized to all zeros, alpha 0
    with pytest.raises(PackedFormatError, match=r'^stages.0.0.conv_kxk: .*cannot store'):
        pack_subnet(dict(sd, **{key: w}), arch, {'search_space': space.to_dict()})
    w[0] = sd[key][0]
    packed = pack_subnet(dict(sd, **{key: w}), arch, {'search_space': space.to_dict()})
    c = arch.stem.width
    alpha = packed['state_dict']['fp32'][7 * c:8 * c]
    assert alpha[1] == 0 and (alpha[2:] > 0).all()
