# A static NAS-BNN subnet on ImageNet-1k. Pipeline 1 (deploy with inherited weights):
#   python tools/test.py <this or a preset config> work_dirs/export/<name>/subnet.pth
# Pipeline 2 (finetune, the authors' settings): Adam, lr 1e-5, no weight decay, plain
# cross-entropy, BN in training mode, cosine decay over 25 epochs (the paper reports 25-100),
# starting from the exported subnet (load_from).
_base_ = ['../_base_/search_spaces/table1.py']

custom_imports = dict(imports=['nasbnn_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'
runner_type = 'nasbnn.NASBNNRunner'

arch = 'largest'
data_root = 'data/imagenet'
model = dict(
    type='mmpretrain.ImageClassifier',
    backbone=dict(type='nasbnn.NASBNNSubnet', arch=arch, search_space={{_base_.search_space}}),
    neck=dict(type='mmpretrain.GlobalAveragePooling'),
    head=dict(type='mmpretrain.LinearClsHead', num_classes=1000, in_channels=1536,
              loss=dict(type='mmpretrain.CrossEntropyLoss', loss_weight=1.0)),
    data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor', num_classes=1000,
                           mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5], to_rgb=True))

train_pipeline = [
    dict(type='mmpretrain.LoadImageFromFile'),
    dict(type='mmpretrain.RandomResizedCrop', scale=224),
    dict(type='mmpretrain.RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='mmpretrain.PackInputs'),
]
test_pipeline = [
    dict(type='mmpretrain.LoadImageFromFile'),
    dict(type='mmpretrain.ResizeEdge', scale=256, edge='short'),
    dict(type='mmpretrain.CenterCrop', crop_size=224),
    dict(type='mmpretrain.PackInputs'),
]
train_dataloader = dict(
    batch_size=64, num_workers=8, persistent_workers=True, sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='mmpretrain.ImageNet', data_root=data_root, data_prefix='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64, num_workers=8, persistent_workers=True, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='mmpretrain.ImageNet', data_root=data_root, data_prefix='val', ann_file='meta/val.txt',
                 pipeline=test_pipeline))
val_evaluator = dict(type='mmpretrain.Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

max_epochs = 25
optim_wrapper = dict(optimizer=dict(type='Adam', lr=1e-5, weight_decay=0.0))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0, end=max_epochs)]
auto_scale_lr = dict(base_batch_size=512)
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
custom_hooks = [dict(type='nasbnn.PublishCheckpointHook')]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3, save_best='auto'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
env_cfg = dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
randomness = dict(seed=0, deterministic=False)
visualizer = dict(type='mmpretrain.UniversalVisualizer', vis_backends=[dict(type='LocalVisBackend')])
log_level = 'INFO'
load_from = None
resume = False
