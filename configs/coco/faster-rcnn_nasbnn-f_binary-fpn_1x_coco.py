# The paper's binary Faster R-CNN with NAS-BNN-F: binary FPN and RPN 3x3 conv (full-precision RPN 1x1 convs and
# RoI head), inheriting the Table-1 supernet's weights, COCO 2017, 1x schedule for binary backbones, 8 GPUs x 2:
#     NASBNN_SUPERNET=<supernet published.pth> bash tools/dist_train.sh THIS 8
# OPs in the paper's Table-3 convention: python tools/count_ops.py --det-config THIS --convention paper
_base_ = [
    '../_base_/models/faster-rcnn_nasbnn_binary-fpn.py', 'mmdet::_base_/datasets/coco_detection.py',
    '../_base_/schedules/nasbnn_det_1x.py', 'mmdet::_base_/default_runtime.py'
]
from nasbnn_mm.det import fpn_in_channels  # noqa: E402

arch = 'F'
model = dict(backbone=dict(arch=arch), neck=dict(in_channels=fpn_in_channels(_base_.model.backbone, arch=arch)))
