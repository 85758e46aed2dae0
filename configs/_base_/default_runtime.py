# Runtime shared by the classification configs (supernet, subnet, finetune, search): mmpretrain
# defaults plus our runner (checkpoint trust policy). The CPU configs override hooks and env_cfg.
custom_imports = dict(imports=['nasbnn_mm.engine', 'nasbnn_mm.datasets'], allow_failed_imports=False)
default_scope = 'mmpretrain'
runner_type = 'nasbnn.NASBNNRunner'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
env_cfg = dict(
    cudnn_benchmark=True, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0), dist_cfg=dict(backend='nccl'))
randomness = dict(seed=0, deterministic=False)
visualizer = dict(type='mmpretrain.UniversalVisualizer', vis_backends=[dict(type='LocalVisBackend')])
log_level = 'INFO'
load_from = None
resume = False
