# NAS-BNN-E on ImageNet-1k: pipeline 1 (tools/test.py this config <exported subnet.pth>) and
# pipeline 2 (tools/train.py this config --cfg-options load_from=<exported subnet.pth>).
_base_ = ['./nasbnn-subnet_8xb64_in1k.py']

model = dict(backbone=dict(arch='E'), head=dict(in_channels=1536))
