# The paper's binary Faster R-CNN: the NAS-BNN backbone under a binary FPN (1x1 lateral and 3x3 output
# convolutions binary, extra level by max pooling) and an RPN whose 3x3 conv is binary; the RPN's 1x1
# objectness / box convs and the RoI head stay full precision (as BiDet, IDa-Det and LWS-Det do).
# Every binary conv is RSign -> binary conv (weight normalization, alpha) -> BN -> + shortcut -> RPReLU.
_base_ = ['./faster-rcnn_nasbnn_fpn.py']

model = dict(neck=dict(type='nasbnn.BinaryFPN'), rpn_head=dict(type='nasbnn.BinaryRPNHead'))
