# Faster R-CNN + FPN with the binary NAS-BNN-F backbone (inherits the Table-1 supernet's weights),
# COCO 2017, 1x schedule for binary backbones (see configs/_base_/schedules/nasbnn_det_1x.py), 8 GPUs x 2 images:
#     NASBNN_SUPERNET=<supernet published.pth> torchrun --nproc-per-node 8 tools/train.py THIS --launcher pytorch
_base_ = [
    '../_base_/models/faster-rcnn_nasbnn_fpn.py', 'mmdet::_base_/datasets/coco_detection.py',
    '../_base_/schedules/nasbnn_det_1x.py', 'mmdet::_base_/default_runtime.py'
]
from nasbnn_mm.det import fpn_in_channels  # noqa: E402

arch = 'F'
model = dict(backbone=dict(arch=arch), neck=dict(in_channels=fpn_in_channels(_base_.model.backbone, arch=arch)))
