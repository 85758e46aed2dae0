"""The OpenMMLab clients people already use work on what the project writes: mmpretrain's
ImageClassificationInferencer on an exported subnet (config + checkpoint the export wrote) and
mmdet's DetInferencer on a detector config + published weights, both naming the predicted class."""
import os

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get('NASBNN_DATA', os.path.join(ROOT, '..', 'shared', 'data'))
SUPERNET_CFG = 'configs/cifar10/nasbnn-supernet_cifar-small_cifar10.py'
DET_CFG = 'configs/coco/faster-rcnn_nasbnn-cifar-small_fpn_coco-small.py'
CIFAR10 = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')


@pytest.mark.skipif(
    not os.path.isfile(os.path.join(DATA, 'cifar10_jpg.tar.gz')),
    reason=f'shared data missing at {DATA} (set NASBNN_DATA)')
def test_image_classification_inferencer_on_an_exported_subnet(tmp_path):
    from mmengine.config import Config
    from mmpretrain import ImageClassificationInferencer
    from test_search import publish_random_supernet

    from nasbnn_mm.engine import export_subnet
    from nasbnn_mm.models import load_packed
    ckpt = publish_random_supernet(tmp_path / 'supernet.pth', seed=0)
    res = export_subnet(
        Config.fromfile(SUPERNET_CFG),
        ckpt,
        'smallest',
        out_dir=str(tmp_path / 'export'),
        calib_batches=0,
        packed=True,
        log=lambda *_: None)
    meta = torch.load(res['checkpoint'], weights_only=True)['meta']
    assert tuple(meta['dataset_meta']['classes']) == CIFAR10
    inferencer = ImageClassificationInferencer(
        model=res['configs']['subnet_test'], pretrained=res['checkpoint'], device='cpu')
    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    out = inferencer(img)[0]
    assert out['pred_class'] in CIFAR10 and 0 <= out['pred_score'] <= 1
    assert out['pred_class'] == CIFAR10[out['pred_label']]
    # the packed 1-bit form keeps the class names too
    packed = torch.load(res['packed'], weights_only=True)['meta']
    assert tuple(packed['dataset_meta']['classes']) == CIFAR10
    assert load_packed(res['packed']).eval() is not None


def test_det_inferencer_on_published_detector_weights(tmp_path):
    from mmdet.apis import DetInferencer
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import nasbnn_mm.det  # noqa: F401
    from nasbnn_mm.registry import MODELS
    from nasbnn_mm.utils import publish_checkpoint
    cfg = Config.fromfile(DET_CFG)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    path = publish_checkpoint(model.state_dict(), str(tmp_path / 'published.pth'),
                              dict(dataset_meta=dict(classes=['person'])))
    inferencer = DetInferencer(model=DET_CFG, weights=path, device='cpu', show_progress=False)
    assert tuple(inferencer.model.dataset_meta['classes']) == ('person', )
    img = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    out = inferencer(img, out_dir=str(tmp_path / 'vis'), no_save_pred=True)
    pred = out['predictions'][0]
    assert set(pred) >= {'labels', 'scores', 'bboxes'} and all(lb == 0 for lb in pred['labels'])
