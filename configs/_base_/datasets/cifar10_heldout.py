# The search's data on the shared CIFAR-10 folders: candidates are scored on 50 training
# images per class held out of the training set (test pipeline), and BN is recalibrated on the
# rest of the training set (train pipeline). Includes cifar10_folders.py: list this file
# *instead of* it in a search config's _base_.
#
# Write the split once (into the cache folder the archive is unpacked to, <cache>/data/cifar10_jpg/meta/):
#   python tools/split_heldout.py --archive ../shared/data/cifar10_jpg.tar.gz --per-class 50 --seed 0
_base_ = ['./cifar10_folders.py']

heldout_ann_file = 'meta/heldout.txt'  # relative to the unpacked archive's root
calib_ann_file = 'meta/train_minus_heldout.txt'

heldout_dataloader = dict(
    batch_size=250,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type={{_base_.dataset_type}},
        archive={{_base_.data_archive}},
        split='train',
        ann_file=heldout_ann_file,
        pipeline={{_base_.test_pipeline}}))
calib_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type={{_base_.dataset_type}},
        archive={{_base_.data_archive}},
        split='train',
        ann_file=calib_ann_file,
        pipeline={{_base_.train_pipeline}}))
