# Supernet optimizer (paper / authors' release): Adam, weight decay 5e-6 only on conv and linear
# weights (not on BN, biases, RSign/RPReLU parameters, kernel transforms, Bi-Transformation or
# the LSQ steps). Learning rate 2.5e-3 as the authors' released code (the paper states 5e-4).
optim_wrapper = dict(
    optimizer=dict(type='Adam', lr=2.5e-3, weight_decay=5e-6),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            '.bias_in': dict(decay_mult=0.0),
            '.bias_out': dict(decay_mult=0.0),
            '.slope': dict(decay_mult=0.0),
            'kernel_transforms': dict(decay_mult=0.0),
            'bi_transform': dict(decay_mult=0.0),
            'conv.step': dict(decay_mult=0.0)
        }))
