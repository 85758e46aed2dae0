# A static NAS-BNN subnet on ImageNet-1k. Pipeline 1 (deploy with inherited weights):
#   python tools/test.py <this or a preset config> work_dirs/export/<name>/subnet.pth
# Pipeline 2 (finetune, the authors' settings): Adam, lr 1e-5, no weight decay, plain
# cross-entropy, BN in training mode, cosine decay over 25 epochs (the paper reports 25-100),
# starting from the exported subnet (load_from).
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/imagenet_nasbnn.py', '../_base_/search_spaces/table1.py']

arch = 'largest'
model = dict(
    type='mmpretrain.ImageClassifier',
    backbone=dict(type='nasbnn.NASBNNSubnet', arch=arch, search_space={{_base_.search_space}}),
    neck=dict(type='mmpretrain.GlobalAveragePooling'),
    head=dict(
        type='mmpretrain.LinearClsHead',
        num_classes=1000,
        in_channels=1536,
        loss=dict(type='mmpretrain.CrossEntropyLoss', loss_weight=1.0)),
    data_preprocessor={{_base_.data_preprocessor}})

max_epochs = 25
optim_wrapper = dict(optimizer=dict(type='Adam', lr=1e-5, weight_decay=0.0))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0, end=max_epochs)]
auto_scale_lr = dict(base_batch_size=512)
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
custom_hooks = [dict(type='nasbnn.PublishCheckpointHook')]
default_hooks = dict(checkpoint=dict(save_best='auto'))
