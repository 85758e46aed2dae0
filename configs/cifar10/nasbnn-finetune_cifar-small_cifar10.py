# Pipeline 2 on CIFAR-10: finetune an exported subnet (load_from = its subnet.pth).
# As the authors: Adam, no weight decay, plain cross-entropy, BN in training mode, cosine
# decay. Their ImageNet lr is 1e-5 for 25-100 epochs; this CPU-scale run is a few hundred
# iterations, so it uses 1e-4 to move measurably in that budget.
_base_ = ['./nasbnn-subnet_cifar-small_cifar10.py']

max_iters = 300
optim_wrapper = dict(optimizer=dict(type='Adam', lr=1e-4, weight_decay=0.0))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=max_iters, by_epoch=False, begin=0, end=max_iters)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
custom_hooks = [dict(type='nasbnn.PublishCheckpointHook')]
