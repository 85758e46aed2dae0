# Reduced NAS-BNN space for CPU demos and tests: Table-1 structure (5 stages, same depths
# pattern shortened, kernels 3/5, group choices) with 1/8 of the channels.
search_space = dict(
    stem=dict(widths=[8, 16], kernel=3, stride=1),
    stages=[
        dict(depths=[1, 2], widths=[16, 24], kernels=[3], groups=[1], stride=1),
        dict(depths=[1, 2], widths=[24, 32], kernels=[3, 5], groups=[1, 2], stride=2),
        dict(depths=[1, 2], widths=[32, 48], kernels=[3, 5], groups=[2, 4], stride=2),
        dict(depths=[2, 3], widths=[48, 64, 96], kernels=[3, 5], groups=[4, 8], stride=2),
        dict(depths=[1, 2], widths=[96, 128], kernels=[3, 5], groups=[8, 16], stride=1),
    ])
