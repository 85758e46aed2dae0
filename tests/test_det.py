"""NAS-BNN in MMDetection: backbone, weight inheritance, FPN wiring, detector training and COCO evaluation."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config

import nasbnn_mm  # noqa: F401
from nasbnn_mm.det import NASBNNDetBackbone, fpn_in_channels
from nasbnn_mm.det.ops_counter import detector_input_size, detector_ops
from nasbnn_mm.models import NASBNNSupernet
from nasbnn_mm.ops import SlicedBatchNorm2d
from nasbnn_mm.space import PRESET_NAMES, ArchitectureError, SearchSpace, get_preset
from nasbnn_mm.utils import CheckpointMismatchError, publish_checkpoint

DATA = os.environ.get('NASBNN_DATA', os.path.join('..', 'shared', 'data'))
COCO = os.path.join(DATA, 'coco_small')
CPU_CONFIG = 'configs/coco/faster-rcnn_nasbnn-cifar-small_fpn_coco-small.py'
SMALL_SPACE = SearchSpace.build('configs/_base_/search_spaces/cifar_small.py')
# one thread per tool process: on a shared 2-core machine OpenMP threads of concurrent processes spin-wait
TOOL_ENV = dict(os.environ, OMP_NUM_THREADS='1')
needs_coco = pytest.mark.skipif(not os.path.isdir(COCO), reason=f'coco_small missing at {COCO} (set NASBNN_DATA)')


def _randomised_supernet(seed=0, space=SMALL_SPACE):
    """A supernet whose every parameter and BN statistic differs from its initial value (transforms
    included), as after training."""
    torch.manual_seed(seed)
    sn = NASBNNSupernet(space.to_dict(), out_indices=(1, 2, 3, 4))
    with torch.no_grad():
        for name, p in sn.named_parameters():
            if not name.endswith('.step'):
                p.add_(0.1 * torch.randn_like(p))
        for m in sn.modules():
            if isinstance(m, SlicedBatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        sn.stem.conv.init_step()
    return sn.eval()


def _publish_supernet(sn, path):
    """Like a supernet run's published.pth: SandwichClassifier keys and meta.search_space."""
    sd = {'backbone.' + k: v for k, v in sn.state_dict().items()}
    sd['head.fc.weight'] = torch.zeros(10, max(sn.space.stages[-1].widths))
    sd['head.fc.bias'] = torch.zeros(10)
    return publish_checkpoint(sd, str(path), {'search_space': sn.space.to_dict(), 'iter': 1})


def _one_line(e):
    msg = str(e.value)
    assert '\n' not in msg
    return msg


# ---------------------------------------------------------------------------------- backbone
@pytest.mark.parametrize('name', PRESET_NAMES)
def test_every_preset_at_a_non_square_size(name):
    bb = NASBNNDetBackbone(arch=name).eval()
    with torch.no_grad():
        outs = bb(torch.randn(1, 3, 72, 104))
    # strides 4, 8, 16, 32 with ceil: 72x104 -> 18x26, 9x13, 5x7, 3x4
    assert [tuple(o.shape[2:]) for o in outs] == [(18, 26), (9, 13), (5, 7), (3, 4)]
    assert [o.shape[1] for o in outs] == list(bb.out_channels) == fpn_in_channels(arch=name)
    assert bb.out_channels == tuple(get_preset(name).stage_out_channels[1:])
    assert all(torch.isfinite(o).all() for o in outs)


def test_frozen_stages_and_norm_eval_like_resnet():
    bb = NASBNNDetBackbone('largest', SMALL_SPACE.to_dict(), frozen_stages=2, norm_eval=False).train()
    frozen = [bb.stem, bb.stages[0], bb.stages[1]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(not m.training for f in frozen for m in f.modules())
    assert all(p.requires_grad for m in bb.stages[2:] for p in m.parameters())
    assert bb.stages[2][0].bn1.training
    bb = NASBNNDetBackbone('largest', SMALL_SPACE.to_dict(), norm_eval=True).train()
    bns = [m for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns) and bb.training
    assert all(p.requires_grad for p in bb.parameters())
    with pytest.raises(ArchitectureError) as e:
        NASBNNDetBackbone('A', frozen_stages=6)
    assert _one_line(e) == 'frozen_stages: 6 not allowed (allowed: -1..5)'
    with pytest.raises(ArchitectureError) as e:
        NASBNNDetBackbone('A', out_indices=(3, 1))
    assert _one_line(e).startswith('out_indices: (3, 1) must be increasing')


def test_architecture_from_a_pareto_file(tmp_path):
    a, b = SMALL_SPACE.smallest().to_text(), SMALL_SPACE.largest().to_text()
    path = tmp_path / 'pareto.json'
    path.write_text(
        json.dumps(
            dict(
                front=[dict(bin=10, arch=a, ops=9.8, acc=50.0),
                       dict(bin=20, arch=b, ops=20.3, acc=60.0)],
                search_space=SMALL_SPACE.to_dict())))
    bb = NASBNNDetBackbone(pareto=str(path), ops=20)  # the space comes from the pareto file
    assert bb.arch.to_text() == b and bb.space == SMALL_SPACE
    assert fpn_in_channels(pareto=str(path), ops=10) == list(SMALL_SPACE.smallest().stage_out_channels[1:])
    with pytest.raises(ArchitectureError) as e:
        NASBNNDetBackbone(pareto=str(path), ops=15)
    assert _one_line(e) == f'ops: bin 15 not in {path} (allowed bins: 10, 20)'
    with pytest.raises(ArchitectureError) as e:
        NASBNNDetBackbone(arch='A', pareto=str(path), ops=10)
    assert _one_line(e).startswith('arch: give either arch')


# ---------------------------------------------------------------------------------- inheritance
@pytest.mark.parametrize('seed', [0, 1])
def test_inherited_backbone_equals_supernet_features(tmp_path, seed):
    from mmdet.registry import MODELS

    # float64 throughout: two computations of the same subnet agree to rounding (a float32 rounding
    # difference could flip a binary activation, and float32 differs across CPUs)
    sn = _randomised_supernet(seed).double()
    ckpt = _publish_supernet(sn, tmp_path / 'published.pth')
    import random
    arch = SMALL_SPACE.sample(random.Random(seed))
    bb = MODELS.build(
        dict(
            type='mmdet.NASBNNDetBackbone',
            arch=arch.to_text(),
            search_space=SMALL_SPACE.to_dict(),
            init_cfg=dict(type='nasbnn.InheritFromSupernet', checkpoint=ckpt))).double()
    bb.init_weights()
    bb.eval()
    sn.set_subnet(arch, 'binary')
    x = torch.randn(2, 3, 37, 53, dtype=torch.float64)
    with torch.no_grad():
        ref, got = sn(x), bb(x)
    assert len(ref) == len(got) == 4
    for r, g in zip(ref, got):
        assert r.shape == g.shape
        assert (g - r).abs().max() <= 1e-10 * r.abs().max()
    # the static subnet's own checkpoint (exported subnet / trained detector) round-trips too
    sub = publish_checkpoint({
        'backbone.' + k: v
        for k, v in bb.state_dict().items()
    }, str(tmp_path / 'sub.pth'), {
        'arch': arch.to_text(),
        'wn_eps': 1e-5,
        'wn_unbiased': False
    })
    bb2 = NASBNNDetBackbone(
        arch.to_text(), SMALL_SPACE.to_dict(), init_cfg=dict(type='nasbnn.InheritFromSupernet',
                                                             checkpoint=sub)).double()
    bb2.init_weights()
    with torch.no_grad():
        torch.testing.assert_close(bb2.eval()(x)[-1], got[-1], rtol=0, atol=0)


def test_mismatched_checkpoints_name_the_first_tensor(tmp_path):
    sn = _randomised_supernet()
    bb = NASBNNDetBackbone(SMALL_SPACE.smallest(), SMALL_SPACE.to_dict())
    sub = publish_checkpoint({
        'backbone.' + k: v
        for k, v in bb.state_dict().items()
    }, str(tmp_path / 'sub.pth'), {'arch': SMALL_SPACE.smallest().to_text()})
    init = dict(type='nasbnn.InheritFromSupernet', checkpoint=sub)
    # another architecture of the same space: the stem is wider
    other = NASBNNDetBackbone('largest', SMALL_SPACE.to_dict(), init_cfg=init)
    with pytest.raises(CheckpointMismatchError) as e:
        other.init_weights()
    assert _one_line(e) == (f'checkpoint {sub}: tensor backbone.stem.conv.weight has shape (8, 3, 3, 3), '
                            f'architecture {SMALL_SPACE.largest().to_text()} needs (16, 3, 3, 3)')
    # a supernet whose tensors contradict its recorded search space
    sd = {'backbone.' + k: v for k, v in sn.state_dict().items()}
    sd['backbone.stages.2.0.conv_kxk.weight'] = sd['backbone.stages.2.0.conv_kxk.weight'][:, :4]
    bad = publish_checkpoint(sd, str(tmp_path / 'bad.pth'), {'search_space': SMALL_SPACE.to_dict()})
    with pytest.raises(CheckpointMismatchError) as e:
        NASBNNDetBackbone('largest', SMALL_SPACE.to_dict(), init_cfg=dict(init, checkpoint=bad)).init_weights()
    assert _one_line(e) == (f'checkpoint {bad}: tensor backbone.stages.2.0.conv_kxk.weight has shape (32, 4, 5, 5), '
                            "the supernet of the checkpoint's search space needs (32, 16, 5, 5)")
    # an architecture outside the supernet's space (Table-1 preset, CIFAR supernet)
    ok = _publish_supernet(sn, tmp_path / 'sn.pth')
    with pytest.raises(CheckpointMismatchError) as e:
        NASBNNDetBackbone('A', init_cfg=dict(init, checkpoint=ok)).init_weights()
    assert _one_line(e).endswith("the architecture is not in the supernet's search space: "
                                 'stem: width 24 not allowed (allowed: 8, 16)')


# ---------------------------------------------------------------------------------- configs / FPN
@pytest.mark.parametrize('name', ['a', 'f'])
def test_fpn_in_channels_follow_the_architecture(name):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(f'configs/coco/faster-rcnn_nasbnn-{name}_fpn_1x_coco.py')
    assert cfg.model.backbone.arch == name.upper() and cfg.default_scope == 'mmdet'
    assert cfg.model.backbone.init_cfg.type == 'nasbnn.InheritFromSupernet'
    model = MODELS.build(dict(cfg.model, backbone=dict(cfg.model.backbone, init_cfg=None)))
    lateral = [m.conv.in_channels for m in model.neck.lateral_convs]
    assert lateral == list(model.backbone.out_channels) == list(get_preset(name).stage_out_channels[1:])
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 64, 96))
    assert len(feats) == 5 and all(f.shape[1] == 256 for f in feats)


def test_cpu_config_wiring():
    cfg = Config.fromfile(CPU_CONFIG)
    bb = cfg.model.backbone
    assert bb.arch == 'largest' and tuple(bb.strides) == (2, 1, 2, 2, 2, 2)
    assert cfg.model.neck.in_channels == list(SMALL_SPACE.largest().stage_out_channels[1:])
    assert cfg.model.roi_head.bbox_head.num_classes == 1
    assert cfg.train_dataloader.dataset.metainfo == dict(classes=('person', ))
    assert detector_input_size(cfg) == (320, 480)


def test_detector_flops_match_mmengine_flop_analyzer():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.analysis import FlopAnalyzer
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(CPU_CONFIG)
    for extra in (False, 'on_input'):
        mcfg = dict(
            cfg.model,
            backbone=dict(cfg.model.backbone, init_cfg=None),
            neck=dict(cfg.model.neck, add_extra_convs=extra))
        model = MODELS.build(mcfg).eval()
        rep = detector_ops(mcfg, (120, 190))  # padded to 128x192
        assert rep['padded_size'] == [128, 192]
        with torch.no_grad():
            feats = model.backbone(torch.randn(1, 3, 128, 192))
            outs = model.neck(feats)

        def macs(module, inputs):
            fa = FlopAnalyzer(module, inputs)
            fa.unsupported_ops_warnings(False)
            # MACs of convs and linear layers; the FPN's nearest upsampling is not counted
            return sum(v for k, v in fa.by_operator().items() if k != 'upsample_nearest2d')

        assert rep['neck_flops'] == macs(model.neck, (feats, ))
        assert rep['rpn_flops'] == macs(model.rpn_head, (outs, ))
        rois = torch.randn(7, 64, 7, 7)
        assert rep['roi_flops'] == macs(model.roi_head.bbox_head, (rois, )) // 7 * 300
    from nasbnn_mm.space import profile_arch

    # the backbone is counted at the detector's strides (not the CIFAR space's) and without classifier
    assert model.backbone.space.stem.stride == 2
    assert rep['backbone_ops'] == profile_arch(model.backbone.arch, (128, 192), 0, model.backbone.space).ops


def test_count_ops_tool_reports_detector_ops(capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location('count_ops_tool', 'tools/count_ops.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(['--det-config', CPU_CONFIG, '--json']) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep['img_size'] == [320, 480] and rep['proposals'] == 300
    assert rep['ops'] == rep['backbone_ops'] + rep['neck_flops'] + rep['rpn_flops'] + rep['roi_flops']
    assert tool.main(
        ['A', '--det-config', 'configs/coco/faster-rcnn_nasbnn-f_fpn_1x_coco.py', '--img-size', '800x1333']) == 0
    out = capsys.readouterr().out
    assert 'input      800x1333 (padded 800x1344)' in out and '(1000 proposals x 14.30M)' in out
    assert f'arch       {get_preset("A").to_text()}' in out


# ---------------------------------------------------------------------------------- train / test tools
FAST = [
    'train_cfg.max_iters=2', 'train_cfg.val_begin=100', 'train_dataloader.dataset.indices=4',
    'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
    'train_dataloader.dataset.pipeline.2.scale=(192,128)', 'default_hooks.logger.interval=1'
]
TEST_FAST = [
    'test_dataloader.dataset.indices=6', 'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
    'test_dataloader.dataset.pipeline.1.scale=(192,128)'
]


@pytest.fixture(scope='module')
def trained_detector(tmp_path_factory):
    if not os.path.isdir(COCO):
        pytest.skip(f'coco_small missing at {COCO}')
    tmp = tmp_path_factory.mktemp('det')
    ckpt = _publish_supernet(_randomised_supernet(), tmp / 'supernet.pth')
    work = tmp / 'train'
    out = subprocess.run([
        sys.executable, 'tools/train.py', CPU_CONFIG, '--work-dir',
        str(work), '--cfg-options', f'model.backbone.init_cfg.checkpoint={ckpt}', *FAST
    ],
                         capture_output=True,
                         text=True,
                         timeout=600,
                         env=TOOL_ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    return work, out.stdout + out.stderr


@needs_coco
def test_two_iteration_detector_training_inherits_the_supernet(trained_detector):
    work, log = trained_detector
    assert 'InheritFromSupernet: c16_k3_g1 | c24_k3_g1 c24_k3_g1' in log and 'from supernet' in log
    assert 'Iter(train) [2/2]' in log
    last = [l for l in log.splitlines() if 'Iter(train) [2/2]' in l][0]
    for key in ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'):
        assert np.isfinite(float(last.split(f'{key}: ')[1].split()[0]))
    pub = torch.load(work / 'published.pth', weights_only=True)
    assert pub['meta']['iter'] == 2 and 'backbone.stem.conv.step' in pub['state_dict']
    assert pub['state_dict']['roi_head.bbox_head.fc_cls.weight'].shape == (2, 256)  # person + background


@needs_coco
def test_mismatched_supernet_fails_the_train_tool_in_one_line(tmp_path):
    ckpt = _publish_supernet(_randomised_supernet(), tmp_path / 'sn.pth')
    # the Table-1 preset A in the CPU detector, with the CIFAR-space supernet (the tool derives the FPN channels)
    table1_a = ['model.backbone.strides=None', 'model.backbone.search_space=None', 'model.backbone.arch=A']
    out = subprocess.run([
        sys.executable, 'tools/train.py', CPU_CONFIG, '--work-dir',
        str(tmp_path / 'w'), '--cfg-options', f'model.backbone.init_cfg.checkpoint={ckpt}', *table1_a, *FAST
    ],
                         capture_output=True,
                         text=True,
                         timeout=600,
                         env=TOOL_ENV)
    assert out.returncode == 2, out.stderr[-2000:]
    # one line (library warnings such as pkg_resources' may precede it), no traceback
    assert 'Traceback' not in out.stderr
    assert out.stderr.splitlines()[-1] == (f"error: checkpoint {ckpt}: the architecture is not in the supernet's "
                                           'search space: stem: width 24 not allowed (allowed: 8, 16)')


@needs_coco
def test_test_tool_coco_metric_equals_pycocotools(trained_detector, tmp_path):
    from pycocotools.coco import COCO as CocoApi
    from pycocotools.cocoeval import COCOeval
    work, _ = trained_detector
    metrics_json = tmp_path / 'metrics.json'
    prefix = tmp_path / 'preds'
    out = subprocess.run([
        sys.executable, 'tools/test.py', CPU_CONFIG,
        str(work / 'published.pth'), '--work-dir',
        str(tmp_path / 'test'), '--out',
        str(metrics_json), '--show-dir',
        str(tmp_path / 'pics'), '--show-num', '3', '--show-score-thr', '0.0', '--cfg-options', *TEST_FAST,
        f'test_evaluator.outfile_prefix={prefix}'
    ],
                         capture_output=True,
                         text=True,
                         timeout=600,
                         env=TOOL_ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    # --show-dir: the first 2 test images with a person (of the first 6: ids 139 and 17627; 802, 6818, 11813
    # have none), ground truth and predictions side by side at the original size
    import cv2
    pics = sorted(os.listdir(tmp_path / 'pics'))
    assert pics == ['000000000139.jpg', '000000017627.jpg']
    for name in pics:
        drawn = cv2.imread(str(tmp_path / 'pics' / name))
        orig = cv2.imread(os.path.join(COCO, 'val2017', name))
        assert drawn.shape == (orig.shape[0], 2 * orig.shape[1], 3)
    metrics = json.loads(metrics_json.read_text())
    keys = ['mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l']
    assert set(f'coco/bbox_{k}' for k in keys) <= set(metrics)
    assert f'coco/bbox_mAP: {metrics["coco/bbox_mAP"]:.4f}' in out.stdout + out.stderr
    # the same predictions through pycocotools' standard evaluation (all val images, person only)
    gt = CocoApi(os.path.join(COCO, 'annotations', 'instances_val2017.json'))
    preds = json.loads((tmp_path / 'preds.bbox.json').read_text())
    assert preds and {p['image_id'] for p in preds} <= set(gt.getImgIds()) and {p['category_id'] for p in preds} == {1}
    ev = COCOeval(gt, gt.loadRes(preds), 'bbox')
    ev.params.catIds = [1]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    for i, k in enumerate(keys):
        assert metrics[f'coco/bbox_{k}'] == pytest.approx(ev.stats[i], abs=5e-4)


@needs_coco
def test_config_metric_equals_pycocotools_on_nontrivial_predictions(tmp_path):
    """CocoMetric as the CPU config builds it (person subset) vs pycocotools on jittered ground truth."""
    from mmdet.registry import METRICS
    from mmdet.utils import register_all_modules
    from pycocotools.coco import COCO as CocoApi
    from pycocotools.cocoeval import COCOeval
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(CPU_CONFIG)
    metric = METRICS.build(dict(cfg.test_evaluator, outfile_prefix=str(tmp_path / 'p')))
    metric.dataset_meta = dict(classes=cfg.metainfo['classes'])
    gt = CocoApi(cfg.test_evaluator.ann_file)
    rng = np.random.default_rng(0)
    for img_id in gt.getImgIds():
        anns = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=img_id, catIds=[1], iscrowd=False))]
        boxes = [[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2], a['bbox'][1] + a['bbox'][3]] for a in anns]
        boxes = np.array(boxes + [[10, 10, 60, 90]], dtype=np.float32)  # plus a false positive
        boxes += rng.normal(0, 4, boxes.shape).astype(np.float32)
        pred = dict(
            bboxes=torch.from_numpy(boxes),
            scores=torch.from_numpy(rng.uniform(0.1, 1, len(boxes))).float(),
            labels=torch.zeros(len(boxes), dtype=torch.long))
        metric.process({}, [dict(img_id=img_id, pred_instances=pred, ori_shape=(480, 640))])
    got = metric.evaluate(len(gt.getImgIds()))
    ev = COCOeval(gt, gt.loadRes(str(tmp_path / 'p.bbox.json')), 'bbox')
    ev.params.catIds = [1]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert 0.05 < ev.stats[0] < 0.9
    for i, k in enumerate(['mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l']):
        assert got[f'coco/bbox_{k}'] == pytest.approx(ev.stats[i], abs=5e-4)


def test_tools_recompute_fpn_channels_after_an_arch_override():
    """--cfg-options model.backbone.arch=A on the NAS-BNN-D detector config: the FPN follows."""
    import argparse

    from nasbnn_mm.apis import load_tool_config
    args = argparse.Namespace(
        cfg_options={'model.backbone.arch': 'A'}, work_dir=None, trust_checkpoint=False, launcher='none', local_rank=0)
    cfg = load_tool_config(args, 'configs/coco/faster-rcnn_nasbnn-d_fpn_1x_coco.py')
    assert cfg.model.backbone.arch == 'A'
    assert list(cfg.model.neck.in_channels) == fpn_in_channels(arch='A') != fpn_in_channels(arch='D')
    args.cfg_options = None  # unchanged config: untouched
    cfg = load_tool_config(args, 'configs/coco/faster-rcnn_nasbnn-d_fpn_1x_coco.py')
    assert list(cfg.model.neck.in_channels) == fpn_in_channels(arch='D')


@pytest.mark.parametrize('config', [CPU_CONFIG, 'configs/coco/faster-rcnn_nasbnn-cifar-small_binary-fpn_coco-small.py'])
def test_roi_head_sees_the_features_an_independent_roi_align_gives(config):
    """The RoI features of the CPU detectors equal torchvision's RoIAlign (an independent implementation that
    honours any memory layout) on the neck's outputs. mmcv's CPU RoIAlign reads its input's memory as NCHW,
    so a backbone that computes in channels_last must hand contiguous features on: before it did, the RoI
    head got scrambled features (here off by up to 511 where they reach 462) and could not overfit 8 images."""
    from mmengine.registry import DefaultScope
    from torchvision.ops import roi_align

    from nasbnn_mm.registry import MODELS
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        det = MODELS.build(cfg.model)
    with torch.no_grad():
        det.backbone.stem.conv.init_step()  # as the first training step does (else the stem outputs zeros)
    det.eval()
    x = torch.randn(2, 3, 96, 128)
    # boxes below 112 px (sqrt of the area) map to the stride-4 level (mmdet's finest_scale 56)
    rois = torch.tensor([[0, 4., 6., 60., 70.], [1, 30., 10., 90., 80.], [0, 50.5, 20.25, 100., 60.]])
    with torch.no_grad():
        backbone_feats = det.backbone(x)
        feats = det.extract_feat(x)
        got = det.roi_head.bbox_roi_extractor(feats[:det.roi_head.bbox_roi_extractor.num_inputs], rois)
    want = roi_align(feats[0], rois, 7, spatial_scale=0.25, sampling_ratio=0, aligned=True)
    assert got.shape == want.shape == (3, cfg.model.neck.out_channels, 7, 7) and want.abs().max() > 1
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    assert all(f.is_contiguous() for f in backbone_feats + feats)
