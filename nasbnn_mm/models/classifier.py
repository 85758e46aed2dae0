"""The supernet classifier trained with the sandwich rule and Bi-Teacher distillation."""
from __future__ import annotations
import random
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import MessageHub
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

from ..ops import BINARY, TEACHER
from ..registry import MODELS
from ..space import Architecture

__all__ = ['SandwichClassifier', 'sandwich_students']


def sandwich_students(space,
                      iteration: int,
                      sample_seed: int = 0,
                      num_random: int = 2) -> List[Tuple[str, Architecture]]:
    """The student subnets the sandwich rule trains at ``iteration``: the smallest, then
    ``num_random`` random ones from ``random.Random(f'{sample_seed}-{iteration}')`` (a pure
    function of its arguments, so every rank, and any tool, derives the same subnets)."""
    rng = random.Random(f'{sample_seed}-{iteration}')
    archs = [('smallest', space.smallest())]
    archs += [(f'random{i}', space.sample(rng)) for i in range(num_random)]
    return archs


@MODELS.register_module()
class SandwichClassifier(ImageClassifier):
    """ImageClassifier over a :class:`NASBNNSupernet` backbone.

    One training iteration (``train_step``):
      1. teacher: the largest subnet in teacher mode (full-precision normalized weights,
         binary activations), ``teacher_loss`` on the labels (label smoothing 0.1);
      2. students, binary mode: the smallest subnet and ``num_random`` random subnets drawn
         under ND, each with ``distill_loss`` to the detached teacher probabilities (T = 1);
      3. the gradients of all passes accumulate; one optimizer step.
    The random subnets come from ``random.Random(f'{sample_seed}-{iter}')`` so that every rank
    (and a resumed run) trains the same subnets at the same iteration without communication.

    Outside training the classifier runs the backbone's current subnet (``set_subnet``).
    """

    def __init__(self,
                 backbone: dict,
                 neck: Optional[dict] = None,
                 head: Optional[dict] = None,
                 num_random: int = 2,
                 sample_seed: int = 0,
                 teacher_loss: dict = dict(type='mmpretrain.LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
                 distill_loss: dict = dict(type='mmpretrain.CrossEntropyLoss', use_soft=True),
                 **kwargs):
        super().__init__(backbone=backbone, neck=neck, head=head, **kwargs)
        self.num_random = num_random
        self.sample_seed = sample_seed
        self.teacher_loss = MMPRETRAIN_MODELS.build(teacher_loss)
        self.distill_loss = MMPRETRAIN_MODELS.build(distill_loss)

    @property
    def space(self):
        return self.backbone.space

    def set_subnet(self, arch=None, mode: Optional[str] = None) -> Architecture:
        return self.backbone.set_subnet(arch, mode)

    def forward(self, inputs, data_samples=None, mode: str = 'tensor', arch=None, weight_mode=None):
        if arch is not None or weight_mode is not None:
            self.backbone.set_subnet(arch, weight_mode)
        return super().forward(inputs, data_samples, mode)

    # ---------------------------------------------------------------- sandwich rule
    def sandwich_archs(self, iteration: int) -> List[Tuple[str, Architecture]]:
        """Student subnets of an iteration: smallest, then ``num_random`` random ones."""
        return sandwich_students(self.space, iteration, self.sample_seed, self.num_random)

    def train_step(self, data, optim_wrapper) -> Dict[str, torch.Tensor]:
        return self.sandwich_step(data, optim_wrapper, self)

    def sandwich_step(self, data, optim_wrapper, forward) -> Dict[str, torch.Tensor]:
        """Run the sandwich rule; ``forward`` is this model or its DDP wrapper (so the
        gradient all-reduce happens on every backward)."""
        iteration = MessageHub.get_current_instance().get_info('iter', 0)
        with optim_wrapper.optim_context(self):
            data = self.data_preprocessor(data, True)
        inputs, samples = data['inputs'], data['data_samples']
        labels = torch.cat([s.gt_label for s in samples]).to(inputs.device)
        log_vars: Dict[str, torch.Tensor] = {}

        with optim_wrapper.optim_context(forward):
            logits = forward(inputs, mode='tensor', arch=self.space.largest(), weight_mode=TEACHER)
            loss = self.teacher_loss(logits, labels)
        optim_wrapper.backward(loss)
        log_vars['loss_teacher'] = loss.detach()
        soft_targets = F.softmax(logits.detach(), dim=1)
        total = loss.detach()

        for name, arch in self.sandwich_archs(iteration):
            with optim_wrapper.optim_context(forward):
                logits = forward(inputs, mode='tensor', arch=arch, weight_mode=BINARY)
                loss = self.distill_loss(logits, soft_targets)
            optim_wrapper.backward(loss)
            log_vars[f'loss_{name}'] = loss.detach()
            total = total + loss.detach()
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        log_vars['loss'] = total
        # leave the model in its default evaluation state: largest subnet, binary weights
        self.backbone.set_subnet(self.space.largest(), BINARY)
        return log_vars
