# NAS-BNN search space, paper Table 1 (the default of every tool).
# Each stage: allowed depths, and per layer allowed widths / kernels / groups; the first
# layer of a stage has the stage's stride. The stem is a 3x3 stride-2 8-bit conv.
search_space = dict(
    stem=dict(widths=[24, 32, 48], kernel=3, stride=2),
    stages=[
        dict(depths=[2, 3], widths=[48, 64, 96], kernels=[3], groups=[1], stride=1),
        dict(depths=[2, 3], widths=[96, 128, 192], kernels=[3, 5], groups=[1, 2], stride=2),
        dict(depths=[2, 3], widths=[192, 256, 384], kernels=[3, 5], groups=[2, 4], stride=2),
        dict(depths=[8, 9], widths=[384, 512, 768], kernels=[3, 5], groups=[4, 8], stride=2),
        dict(depths=[2, 3], widths=[768, 1024, 1536], kernels=[3, 5], groups=[8, 16], stride=2),
    ])
