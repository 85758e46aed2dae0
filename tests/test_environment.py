"""The pinned OpenMMLab stack is installed and works on CPU, and nasbnn_mm plugs into its registries."""
import uuid

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

EXPECTED_VERSIONS = dict(torch='2.14.1', mmengine='0.10.7', mmcv='2.1.0', mmdet='3.3.0', mmpretrain='1.2.0')


def _base_version(v):
    return v.split('+')[0]  # torch reports e.g. '2.14.1+cu130'


@pytest.mark.parametrize('name', sorted(EXPECTED_VERSIONS))
def test_versions(name):
    mod = pytest.importorskip(name) if name in ('mmcv', 'mmdet', 'mmpretrain') else __import__(name)
    assert _base_version(mod.__version__) == EXPECTED_VERSIONS[name]


# --------------------------------------------------------------------------- mmcv ops (compiled, CPU)


def test_mmcv_nms_cpu():
    from mmcv.ops import nms
    boxes = torch.tensor([
        [0., 0., 10., 10.],  # kept (best score)
        [1., 1., 11., 11.],  # IoU 81/119 = 0.68 with box 0 -> suppressed
        [20., 20., 30., 30.],  # disjoint -> kept
        [0., 0., 10., 9.]
    ])  # IoU 0.9 with box 0 -> suppressed
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [3, 2]
    torch.testing.assert_close(dets, torch.tensor([[0., 0., 10., 9., 0.95], [20., 20., 30., 30., 0.7]]))
    # with a higher threshold box 1 survives box 3 (IoU 72/118 = 0.61 < 0.65); box 0 still does not (0.9)
    _, keep = nms(boxes, scores, iou_threshold=0.65)
    assert keep.tolist() == [3, 1, 2]


def test_mmcv_roi_align_cpu():
    from mmcv.ops import RoIAlign
    roi_align = RoIAlign(output_size=(2, 2), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    # f(y, x) = 8y + x; bilinear sampling of a linear function is exact, so bin means are known
    feats = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8).repeat(2, 3, 1, 1)
    feats[1] *= 2
    rois = torch.tensor([[0., 0., 0., 4., 4.], [1., 2., 2., 6., 6.]])  # (batch_idx, x1, y1, x2, y2)
    out = roi_align(feats, rois)
    assert out.shape == (2, 3, 2, 2)
    expected0 = torch.tensor([[4.5, 6.5], [20.5, 22.5]])  # bin centres at (0.5|2.5) in pixel index coords
    expected1 = 2 * (expected0 + 8 * 2 + 2)  # roi shifted by 2 in x and y, batch 1 doubled
    torch.testing.assert_close(out[0], expected0.expand(3, 2, 2))
    torch.testing.assert_close(out[1], expected1.expand(3, 2, 2))


def test_mmdet_mmpretrain_import():
    import mmdet
    import mmpretrain
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    assert mmdet.__version__ == '3.3.0' and mmpretrain.__version__ == '1.2.0'
    assert MMDET_MODELS.parent is MMENGINE_MODELS
    assert MMPRETRAIN_MODELS.parent is MMENGINE_MODELS


# --------------------------------------------------------------------------- nasbnn_mm registries

# the registries something registers into (nasbnn_mm/registry.py)
REGISTRY_NAMES = [
    'MODELS', 'LOOPS', 'HOOKS', 'RUNNERS', 'MODEL_WRAPPERS', 'WEIGHT_INITIALIZERS', 'DATASETS', 'DATA_SAMPLERS'
]


@pytest.mark.parametrize('name', REGISTRY_NAMES)
def test_nasbnn_registries_are_children_of_mmengine_roots(name):
    import mmengine.registry

    import nasbnn_mm
    ours = getattr(nasbnn_mm.registry, name)
    root = getattr(mmengine.registry, name)
    assert ours.scope == 'nasbnn'
    assert ours.parent is root
    assert root.children['nasbnn'] is ours


def test_nasbnn_runner_reachable_from_all_frameworks():
    import mmengine.registry

    from nasbnn_mm.engine import NASBNNRunner
    assert mmengine.registry.RUNNERS.get('nasbnn.NASBNNRunner') is NASBNNRunner
    mmdet_registry = pytest.importorskip('mmdet.registry')
    mmpretrain_registry = pytest.importorskip('mmpretrain.registry')
    assert mmdet_registry.RUNNERS.get('nasbnn.NASBNNRunner') is NASBNNRunner
    assert mmpretrain_registry.RUNNERS.get('nasbnn.NASBNNRunner') is NASBNNRunner


ENV_MODELS = Registry('model', parent=MMENGINE_MODELS, scope='nasbnn_envtest')


@ENV_MODELS.register_module()
class EnvToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.linear(inputs)


def test_mmengine_runners_build_nasbnn_runner(tmp_path):
    from mmengine.registry import RUNNERS

    from nasbnn_mm.engine import NASBNNRunner
    cfg = Config(
        dict(
            runner_type='nasbnn.NASBNNRunner',
            model=dict(type='nasbnn_envtest.EnvToyModel'),
            work_dir=str(tmp_path),
            experiment_name=f'test_env_{uuid.uuid4().hex}',
            default_scope='mmengine',
            log_level='WARNING',
            trust_checkpoint=True))
    runner = RUNNERS.build(cfg)
    assert type(runner) is NASBNNRunner
    assert isinstance(runner.model, EnvToyModel)
    assert runner.trust_checkpoint is True
