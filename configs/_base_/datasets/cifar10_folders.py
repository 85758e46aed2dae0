# CIFAR-10 as ImageNet-style class folders, read from the shared archive and unpacked once into
# the git-ignored .cache/ of the checkout. Data folder: $NASBNN_DATA (default ../shared/data).
data_archive = '{{$NASBNN_DATA:../shared/data}}/cifar10_jpg.tar.gz'
dataset_type = 'nasbnn.ArchiveImageFolder'

data_preprocessor = dict(
    type='mmpretrain.ClsDataPreprocessor',
    num_classes=10,
    # NAS-BNN normalizes with mean = std = 127.5 (i.e. to [-1, 1])
    mean=[127.5, 127.5, 127.5],
    std=[127.5, 127.5, 127.5],
    to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),  # unscoped: mmpretrain's inferencer replaces it by name
    dict(type='mmpretrain.RandomCrop', crop_size=32, padding=4),
    dict(type='mmpretrain.RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='mmpretrain.PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),  # unscoped: mmpretrain's inferencer replaces it by name
    dict(type='mmpretrain.PackInputs'),
]

train_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, archive=data_archive, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=200,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, archive=data_archive, split='test', pipeline=test_pipeline))
val_evaluator = dict(type='mmpretrain.Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
