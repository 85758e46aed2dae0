# CPU-scale version of the paper's binary Faster R-CNN: the CPU detector of
# faster-rcnn_nasbnn-cifar-small_fpn_coco-small.py with a binary FPN and a binary RPN 3x3 conv.
#     python tools/train.py configs/coco/faster-rcnn_nasbnn-cifar-small_binary-fpn_coco-small.py
_base_ = ['./faster-rcnn_nasbnn-cifar-small_fpn_coco-small.py']

model = dict(neck=dict(type='nasbnn.BinaryFPN'), rpn_head=dict(type='nasbnn.BinaryRPNHead'))
