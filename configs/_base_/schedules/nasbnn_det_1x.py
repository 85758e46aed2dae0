# 1x schedule (12 epochs, 8 GPUs x 2 images = batch 16) for a detector with a binary backbone.
#
# The paper gives no detection schedule; this one follows what binary networks need:
#   * AdamW instead of mmdet's SGD(0.02): binary latent weights learn by sign flips, which SGD with
#     momentum and a large lr makes oscillate (BNNs, the NAS-BNN supernet included, train with Adam);
#     lr 1e-4 at batch 16 is the usual AdamW detection lr;
#   * weight decay 0.05 on the full-precision neck and heads, but x1e-4 (= 5e-6, the supernet's value)
#     on the backbone: decay pulls latent binary weights to 0, where their signs flip at random;
#     no decay on norms and biases;
#   * a 1000-iteration linear warm-up (mmdet: 500): the randomly initialised FPN/RPN/RoI heads first
#     settle on the inherited features before large updates reach the binary layers;
#   * gradient clipping (max norm 35, as in mmdet's AdamW recipes) against the spikes of the
#     straight-through estimators;
#   * step decay x0.1 at epochs 8 and 11 (mmdet's 1x), so results compare with mmdet baselines;
#   * SyncBN across the 8 GPUs: the backbone's BN layers train (norm_eval=False) and 2 images per GPU
#     give noisy statistics (torch SyncBatchNorm needs CUDA; single-process runs are unaffected).
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=35, norm_type=2),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, custom_keys={'backbone': dict(decay_mult=1e-4)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
sync_bn = 'torch'
