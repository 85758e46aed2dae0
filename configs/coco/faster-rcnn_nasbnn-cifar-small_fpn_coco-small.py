# CPU-scale detector: Faster R-CNN + FPN on the binary 'largest' subnet of the reduced (CIFAR) space,
# inheriting the weights of the CIFAR supernet, trained and evaluated on coco_small
# ($NASBNN_DATA, default ../shared/data) at 320 px (short side), on the 'person' class only.
#
#     python tools/train.py configs/coco/faster-rcnn_nasbnn-cifar-small_fpn_coco-small.py
#     python tools/test.py configs/coco/faster-rcnn_nasbnn-cifar-small_fpn_coco-small.py \
#         work_dirs/faster-rcnn_nasbnn-cifar-small_fpn_coco-small/published.pth
#
# Supernet checkpoint: $NASBNN_SUPERNET (default: the published.pth of
# configs/cifar10/nasbnn-supernet_cifar-small_cifar10.py's default work dir), or
# --cfg-options model.backbone.init_cfg.checkpoint=PATH.
# All 80 classes: --cfg-options model.roi_head.bbox_head.num_classes=80 train_dataloader.dataset.metainfo=None
#     val_dataloader.dataset.metainfo=None test_dataloader.dataset.metainfo=None
_base_ = [
    '../_base_/models/faster-rcnn_nasbnn_fpn.py', 'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/default_runtime.py', '../_base_/search_spaces/cifar_small.py'
]
from nasbnn_mm.det import fpn_in_channels  # noqa: E402

data_root = '{{$NASBNN_DATA:../shared/data}}/coco_small/'
metainfo = dict(classes=('person', ))  # class subset of the demo
img_scale = (480, 320)  # (w, h) bound, aspect kept: 640x480 -> 427x320

arch = 'largest'
backbone = dict(
    arch=arch,
    search_space=_base_.search_space,
    # the CIFAR space's stem has stride 1 (32 px images): run the same layers at the usual detection
    # strides (stages 1..4 at 4, 8, 16, 32); strides are not weights, so the supernet's still fit
    strides=(2, 1, 2, 2, 2, 2),
    init_cfg=dict(
        type='nasbnn.InheritFromSupernet',
        checkpoint='{{$NASBNN_SUPERNET:work_dirs/nasbnn-supernet_cifar-small_cifar10/published.pth}}'))
# reduced neck and heads (64 channels, 256-d RoI fcs, fewer proposals) for CPU
neck_channels = 64
model = dict(
    backbone=backbone,
    neck=dict(in_channels=fpn_in_channels(_base_.model.backbone, **backbone), out_channels=neck_channels),
    rpn_head=dict(in_channels=neck_channels, feat_channels=neck_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=neck_channels),
        bbox_head=dict(in_channels=neck_channels, fc_out_channels=256, num_classes=len(metainfo['classes']))),
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=300), rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=1, dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2, num_workers=1, dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# short iteration-based schedule; AdamW as in configs/_base_/schedules/nasbnn_det_1x.py, with a larger
# lr for the few hundred iterations of a CPU run
max_iters = 300
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=35, norm_type=2),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, custom_keys={'backbone': dict(decay_mult=1e-4)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', T_max=max_iters, by_epoch=False, begin=0, end=max_iters),
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
