# A static NAS-BNN subnet (pipeline 1: deploy with inherited weights) on CIFAR-10.
# tools/export_subnet.py writes a config that inherits this one and sets the architecture:
#   model = dict(backbone=dict(arch='<text>'), head=dict(in_channels=<last width>))
_base_ = [
    '../_base_/default_runtime_cpu.py', '../_base_/datasets/cifar10_folders.py',
    '../_base_/search_spaces/cifar_small.py'
]

model = dict(
    type='mmpretrain.ImageClassifier',
    backbone=dict(type='nasbnn.NASBNNSubnet', arch='largest', search_space={{_base_.search_space}}),
    neck=dict(type='mmpretrain.GlobalAveragePooling'),
    head=dict(
        type='mmpretrain.LinearClsHead',
        num_classes=10,
        in_channels=128,
        loss=dict(type='mmpretrain.CrossEntropyLoss', loss_weight=1.0)),
    data_preprocessor={{_base_.data_preprocessor}})

val_cfg = dict()
test_cfg = dict()
default_hooks = dict(checkpoint=dict(interval=200))
