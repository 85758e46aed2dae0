"""The paper's binary Faster R-CNN: binary FPN and RPN (shapes as mmdet's, gradients to every binary
layer, the deployed form), and the OPs convention that reproduces the paper's Table 3."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import nasbnn_mm.det  # noqa: F401
from nasbnn_mm.det import BinaryFPN
from nasbnn_mm.det.ops_counter import detector_ops
from nasbnn_mm.models import BinaryConvUnit
from nasbnn_mm.ops import DeployedBinaryConv2d

# paper, Table 3 (Faster R-CNN on COCO, OPs in M)
TABLE3 = dict(A=140, B=217, C=279, D=370, E=443, F=484)
CPU_BINARY = 'configs/coco/faster-rcnn_nasbnn-cifar-small_binary-fpn_coco-small.py'


@pytest.mark.parametrize('name', sorted(TABLE3))
def test_paper_convention_reproduces_table3(name):
    cfg = Config.fromfile(f'configs/coco/faster-rcnn_nasbnn-{name.lower()}_binary-fpn_1x_coco.py')
    rep = detector_ops(cfg.model, convention='paper')
    assert rep['padded_size'] == [320, 320] and rep['neck_binary'] and rep['rpn_binary']
    assert abs(rep['ops'] / 1e6 - TABLE3[name]) <= 0.02 * TABLE3[name], (name, rep['ops'] / 1e6)
    # by hand for the stem and the FPN: 160^2 * 27 * C_stem MACs in full; 1x1 laterals + 3x3 outputs / 64
    arch = cfg.model.backbone.arch
    from nasbnn_mm.space import get_preset
    a = get_preset(arch)
    fpn = sum(s * s * 256 * (c + 9 * 256) for s, c in zip((80, 40, 20, 10), a.stage_out_channels[1:]))
    assert rep['neck_bops'] == fpn and rep['backbone_int8ops'] == 160 * 160 * 27 * a.stem.width


def test_full_convention_counts_binary_parts_as_bops():
    cfg = Config.fromfile('configs/coco/faster-rcnn_nasbnn-d_binary-fpn_1x_coco.py')
    float_cfg = Config.fromfile('configs/coco/faster-rcnn_nasbnn-d_fpn_1x_coco.py')
    b, f = detector_ops(cfg.model, (800, 1333)), detector_ops(float_cfg.model, (800, 1333))
    assert b['neck_bops'] == f['neck_flops'] and b['neck_flops'] == 0  # the same convolutions, now binary
    assert b['rpn_bops'] + b['rpn_flops'] == f['rpn_flops']
    assert b['ops'] == pytest.approx(f['ops'] - f['neck_flops'] * 63 / 64 - b['rpn_bops'] * 63 / 64)


def _mmdet_pair(binary_type, float_type, cfg, **extra):
    from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        b = MODELS.build(dict(cfg, type=binary_type, **extra))
        f = MODELS.build(dict(cfg, type=float_type, **extra))
    return b, f


@pytest.mark.parametrize('extra', [dict(), dict(add_extra_convs='on_input'), dict(start_level=1)])
def test_binary_fpn_outputs_have_mmdets_shapes_and_strides(extra):
    cfg = dict(in_channels=[16, 24, 48, 96], out_channels=32, num_outs=5)
    b, f = _mmdet_pair('nasbnn.BinaryFPN', 'FPN', cfg, **extra)
    feats = [torch.randn(2, c, 40 // 2**i, 52 // 2**i) for i, c in enumerate(cfg['in_channels'])]
    with torch.no_grad():
        ob, of = b(feats), f(feats)
    assert [o.shape for o in ob] == [o.shape for o in of]
    assert not any(isinstance(m, torch.nn.Conv2d) for m in b.modules())  # every conv is binary
    assert all(isinstance(m, BinaryConvUnit) for m in list(b.lateral_convs) + list(b.fpn_convs))


def test_binary_rpn_head_outputs_have_mmdets_shapes():
    cfg = Config.fromfile('configs/coco/faster-rcnn_nasbnn-a_binary-fpn_1x_coco.py').model.rpn_head.to_dict()
    cfg.pop('type')
    b, f = _mmdet_pair('nasbnn.BinaryRPNHead', 'RPNHead', cfg)
    assert isinstance(b.rpn_conv, BinaryConvUnit) and isinstance(b.rpn_cls, torch.nn.Conv2d)
    feats = [torch.randn(1, 256, 20 // 2**i + 1, 24 // 2**i + 1) for i in range(5)]
    with torch.no_grad():
        sb, sf = b(feats), f(feats)
    assert [[t.shape for t in x] for x in sb] == [[t.shape for t in x] for x in sf]


@pytest.fixture(scope='module')
def detector():
    from nasbnn_mm.registry import MODELS
    cfg = Config.fromfile(CPU_BINARY)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    return model


def test_gradients_reach_every_binary_layer(detector):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    model = detector.train()
    imgs = torch.randint(0, 255, (2, 3, 96, 128), dtype=torch.uint8)
    samples = []
    for i in range(2):
        s = DetDataSample(
            metainfo=dict(
                img_shape=(96, 128),
                ori_shape=(96, 128),
                pad_shape=(96, 128),
                scale_factor=(1.0, 1.0),
                batch_input_shape=(96, 128)))
        s.gt_instances = InstanceData(
            bboxes=torch.tensor([[10.0, 12.0, 60.0, 80.0], [70.0, 20.0, 120.0, 90.0]]), labels=torch.tensor([0, 0]))
        samples.append(s)
    data = model.data_preprocessor(dict(inputs=list(imgs), data_samples=samples), True)
    losses = model(**data, mode='loss')
    total, _ = model.parse_losses(losses)
    model.zero_grad()
    total.backward()
    units = [(n, m) for n, m in model.named_modules() if isinstance(m, BinaryConvUnit)]
    assert len(units) == 4 + 4 + 1  # 4 laterals, 4 outputs, the RPN's 3x3
    for name, unit in units:
        for pname, p in unit.named_parameters():
            assert p.grad is not None and bool((p.grad != 0).any()), f'{name}.{pname} gets no gradient'
    for name, p in model.backbone.named_parameters():
        if p.requires_grad and 'step' not in name:
            assert p.grad is not None and bool((p.grad != 0).any()), f'backbone.{name} gets no gradient'


def test_deployed_binary_neck_gives_the_same_features():
    torch.manual_seed(1)
    neck = BinaryFPN([16, 24, 48, 96], 32, 5).double()
    with torch.no_grad():
        for m in neck.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
            for name, p in m.named_parameters(recurse=False):
                if name in ('bias', 'bias_in', 'bias_out'):
                    p.normal_(0, 0.1)
    neck.eval()
    deployed = neck.to_deployed()
    feats = [torch.randn(2, c, 24 // 2**i, 20 // 2**i, dtype=torch.float64) for i, c in enumerate([16, 24, 48, 96])]
    with torch.no_grad():
        for a, b in zip(neck(feats), deployed(feats)):
            assert (a - b).abs().max() <= 1e-9 * a.abs().max()
    assert all(isinstance(u.conv, DeployedBinaryConv2d) for u in deployed.lateral_convs)
