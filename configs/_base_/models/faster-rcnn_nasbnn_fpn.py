# Faster R-CNN + FPN (mmdet's model settings) with a binary NAS-BNN backbone.
#
# The backbone is a static subnet in binary (student) mode with its 8-bit LSQ stem, initialised from
# the shared weights of a trained supernet (nasbnn.InheritFromSupernet; the path can be set with the
# environment variable NASBNN_SUPERNET or --cfg-options model.backbone.init_cfg.checkpoint=PATH).
# Its four outputs (stages at strides 4, 8, 16, 32) feed the FPN, whose in_channels follow from the
# architecture (nasbnn_mm.det.fpn_in_channels): a config choosing another architecture recomputes them,
#     model = dict(backbone=dict(arch=arch), neck=dict(in_channels=fpn_in_channels(arch=arch)))
# and the tools recompute them after --cfg-options model.backbone.arch=... (or pareto / ops).
_base_ = ['mmdet::_base_/models/faster-rcnn_r50_fpn.py']
from nasbnn_mm.det import fpn_in_channels  # noqa: E402

custom_imports = dict(imports=['nasbnn_mm.engine', 'nasbnn_mm.det'], allow_failed_imports=False)
runner_type = 'nasbnn.NASBNNRunner'

arch = 'A'
model = dict(
    # NAS-BNN normalizes images with mean = std = 127.5 (to [-1, 1]), as in supernet training
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5], bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='nasbnn.NASBNNDetBackbone',
        arch=arch,
        out_indices=(1, 2, 3, 4),
        # nothing frozen and BN in training mode: a binary net's BN layers hold the scales that a
        # real-valued net keeps in its weights, and they must adapt to detection images
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=dict(
            type='nasbnn.InheritFromSupernet',
            checkpoint='{{$NASBNN_SUPERNET:work_dirs/nasbnn-supernet_8xb64_in1k/published.pth}}')),
    neck=dict(in_channels=fpn_in_channels(arch=arch)))

# weights-only checkpoint of the detector (work_dir/published.pth) for tools/test.py
custom_hooks = [dict(type='nasbnn.PublishCheckpointHook')]
