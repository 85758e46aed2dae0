# CPU-scale evolutionary Pareto search of the CIFAR-10 supernet (reduced space, 32 px).
# Needs the held-out split:  python tools/split_heldout.py --archive ../shared/data/cifar10_jpg.tar.gz
#   python tools/search.py configs/cifar10/nasbnn-search_cifar-small_cifar10.py \
#       work_dirs/nasbnn-supernet_cifar-small_cifar10/published.pth
#
# The search is the runner's train loop (runner.train() runs it and calls hooks around every
# generation): train_dataloader = the held-out split it scores candidates on, load_from = the
# supernet (tools/search.py sets it), nothing trains.
_base_ = ['./nasbnn-supernet_cifar-small_cifar10.py']

train_dataloader = {{_base_.heldout_dataloader}}
train_cfg = dict(
    _delete_=True,
    type='nasbnn.EvolutionParetoSearchLoop',
    evaluator=dict(type='mmpretrain.Accuracy', topk=(1, )),
    # the same seeded batches on every rank and for every candidate (no persistent workers,
    # so each candidate's workers restart from the same seed)
    calib_dataloader=dict(
        batch_size=64,
        num_workers=2,
        persistent_workers=False,
        sampler=dict(type='nasbnn.UnshardedSampler', shuffle=True, seed=0),
        dataset={{_base_.calib_dataloader.dataset}}),
    calib_batches=10,
    population_size=24,
    max_generations=4,
    num_mutation=8,
    num_crossover=8,
    mutate_prob=0.2,
    # OPs at 32 px of the reduced space: smallest 0.05 M, largest 0.47 M
    ops_range=(0.05, 0.5),
    ops_step=0.02,
    img_size=32,
    seed=0)
# a search evaluates; it neither validates, checkpoints nor publishes the supernet
val_dataloader = None
val_cfg = None
val_evaluator = None
param_scheduler = []
default_hooks = dict(checkpoint=None)
custom_hooks = []
