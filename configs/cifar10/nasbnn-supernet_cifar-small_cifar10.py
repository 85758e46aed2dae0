# CPU-scale NAS-BNN supernet: the reduced space (Table-1 structure, 1/8 of the channels) on
# CIFAR-10 at 32 px. Used by the tests and the demo; trains by iterations.
_base_ = [
    '../_base_/default_runtime_cpu.py', '../_base_/datasets/cifar10_heldout.py',
    '../_base_/schedules/nasbnn_supernet_adam.py', '../_base_/search_spaces/cifar_small.py'
]

model = dict(
    type='nasbnn.SandwichClassifier',
    backbone=dict(type='nasbnn.NASBNNSupernet', search_space={{_base_.search_space}}),
    neck=dict(type='mmpretrain.GlobalAveragePooling'),
    head=dict(type='nasbnn.SlicedLinearClsHead', num_classes=10, in_channels=128),
    num_random=2,
    sample_seed=0,
    data_preprocessor={{_base_.data_preprocessor}})

# As the authors: the supernet never sees the images the search scores candidates on; it trains
# on the training set minus the held-out split (tools/split_heldout.py writes both lists).
train_dataloader = dict(dataset=dict(ann_file={{_base_.calib_ann_file}}))

# templates that tools/export_subnet.py fills in with the exported architecture
subnet_config = 'configs/cifar10/nasbnn-subnet_cifar-small_cifar10.py'
finetune_config = 'configs/cifar10/nasbnn-finetune_cifar-small_cifar10.py'

max_iters = 1500
param_scheduler = [dict(type='CosineAnnealingLR', T_max=max_iters, by_epoch=False, begin=0, end=max_iters)]

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=500)
val_cfg = dict(type='nasbnn.SubnetValLoop', subnets=['largest', 'smallest'], calib_batches=10, ops_img_size=32)
test_cfg = dict(
    type='nasbnn.SubnetTestLoop', subnets=['largest', 'smallest', 'random:2'], calib_batches=10, ops_img_size=32)

# weights-only checkpoint (work_dir/published.pth) for tools/test.py, the search and the detector
# DistSyncCheckHook: ranks must train the same subnets and end with the same weights (no-op on 1 process)
custom_hooks = [dict(type='nasbnn.PublishCheckpointHook'), dict(type='nasbnn.DistSyncCheckHook', interval=50)]
model_wrapper_cfg = dict(type='nasbnn.SandwichDDP', find_unused_parameters=True)
