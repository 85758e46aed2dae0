# Evolutionary Pareto search on ImageNet-1k with the paper's values: population 512, 20
# generations, 128 mutants (probability 0.2) and 128 crossovers per generation, OPs window
# 20-180 M in 2 M bins; candidates scored on 50 held-out training images per class (written by
# tools/split_heldout.py data/imagenet --per-class 50) after BN recalibration on 10 batches
# of 256 training images (the authors: 10 x 2048 over 8 GPUs).
#   torchrun --nproc-per-node 8 tools/search.py configs/imagenet/nasbnn-search_in1k.py \
#       work_dirs/nasbnn-supernet_8xb64_in1k/published.pth --launcher pytorch
# The search is the runner's train loop (runner.train() runs it and calls hooks around every generation).
_base_ = ['./nasbnn-supernet_8xb64_in1k.py']

subnet_config = 'configs/imagenet/nasbnn-subnet_8xb64_in1k.py'
finetune_config = 'configs/imagenet/nasbnn-subnet_8xb64_in1k.py'

train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='mmpretrain.ImageNet',
        data_root='data/imagenet',
        data_prefix='train',
        ann_file='meta/heldout.txt',
        pipeline={{_base_.test_pipeline}}))
train_cfg = dict(
    _delete_=True,
    type='nasbnn.EvolutionParetoSearchLoop',
    evaluator=dict(type='mmpretrain.Accuracy', topk=(1, )),
    calib_dataloader=dict(
        batch_size=256,
        num_workers=8,
        sampler=dict(type='nasbnn.UnshardedSampler', shuffle=True),
        dataset=dict(
            type='mmpretrain.ImageNet',
            data_root='data/imagenet',
            data_prefix='train',
            ann_file='meta/train_minus_heldout.txt',
            pipeline={{_base_.train_pipeline}})),
    calib_batches=10,
    population_size=512,
    max_generations=20,
    num_mutation=128,
    num_crossover=128,
    mutate_prob=0.2,
    ops_range=(20, 180),
    ops_step=2,
    img_size=224,
    seed=0)
# a search evaluates; it neither validates, checkpoints nor publishes the supernet
val_dataloader = None
val_cfg = None
val_evaluator = None
param_scheduler = []
auto_scale_lr = None
default_hooks = dict(checkpoint=None)
custom_hooks = []
