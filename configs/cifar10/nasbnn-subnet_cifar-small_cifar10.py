# A static NAS-BNN subnet (pipeline 1: deploy with inherited weights) on CIFAR-10.
# tools/export_subnet.py writes a config that inherits this one and sets the architecture:
#   model = dict(backbone=dict(arch='<text>'), head=dict(in_channels=<last width>))
_base_ = ['../_base_/datasets/cifar10_folders.py', '../_base_/search_spaces/cifar_small.py']

custom_imports = dict(imports=['nasbnn_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'
runner_type = 'nasbnn.NASBNNRunner'

model = dict(
    type='mmpretrain.ImageClassifier',
    backbone=dict(type='nasbnn.NASBNNSubnet', arch='largest', search_space={{_base_.search_space}}),
    neck=dict(type='mmpretrain.GlobalAveragePooling'),
    head=dict(type='mmpretrain.LinearClsHead', num_classes=10, in_channels=128,
              loss=dict(type='mmpretrain.CrossEntropyLoss', loss_weight=1.0)),
    data_preprocessor={{_base_.data_preprocessor}})

val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=200, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
log_processor = dict(by_epoch=False)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0, deterministic=False)
visualizer = dict(type='mmpretrain.UniversalVisualizer', vis_backends=[dict(type='LocalVisBackend')])
log_level = 'INFO'
load_from = None
resume = False
