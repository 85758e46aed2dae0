# The CPU-scale configs: iteration-based logging and checkpoints, gloo for multi-process runs.
_base_ = ['./default_runtime.py']

default_hooks = dict(logger=dict(interval=20), checkpoint=dict(by_epoch=False, interval=500, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
