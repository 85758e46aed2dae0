"""The supernet classifier trained with the sandwich rule and Bi-Teacher distillation."""
from __future__ import annotations
import random
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import MessageHub
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

from ..ops import BINARY, FULL, TEACHER
from ..registry import MODELS
from ..space import Architecture

__all__ = ['SandwichClassifier', 'sandwich_students']


def _top1(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy (%) of a batch, detached."""
    return (logits.detach().argmax(1) == labels).float().mean() * 100


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
    The log records every pass's loss and its top-1 on the batch (``acc_teacher``, ``acc_smallest``,
    ..., ``acc_students``: the students' mean; the paper's Fig. 3d compares training accuracies).

    Args:
        backbone, neck, head: as mmpretrain's ImageClassifier (the backbone a NASBNNSupernet).
        num_random: random students per iteration (besides the smallest).
        sample_seed: seed of the random students.
        teacher_loss: loss of the teacher on the labels.
        distill_loss: loss of a student to the teacher's probabilities.
        teacher: the teacher's weights / activations -- 'FWBA' (paper, Bi-Teacher: full-precision
            normalized weights, binary activations), 'FWFA' (full-precision weights and activations) or
            'BWBA' (binary weights and activations): an ablation of the paper's Fig. 3c.
        distill: students learn from the teacher (paper); False: from the labels with ``teacher_loss``.
    """

    TEACHERS = {'FWBA': TEACHER, 'FWFA': FULL, 'BWBA': BINARY}

    def __init__(self,
                 backbone: dict,
                 neck: Optional[dict] = None,
                 head: Optional[dict] = None,
                 num_random: int = 2,
                 sample_seed: int = 0,
                 teacher_loss: dict = dict(type='mmpretrain.LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
                 distill_loss: dict = dict(type='mmpretrain.CrossEntropyLoss', use_soft=True),
                 teacher: str = 'FWBA',
                 distill: bool = True,
                 **kwargs):
        super().__init__(backbone=backbone, neck=neck, head=head, **kwargs)
        if teacher not in self.TEACHERS:
            raise ValueError(f'teacher: {teacher!r} not allowed (allowed: {", ".join(self.TEACHERS)})')
        if not isinstance(distill, bool):
            raise ValueError(f'distill: {distill!r} not allowed (allowed: True, False)')
        if isinstance(num_random, bool) or not isinstance(num_random, int) or num_random < 0:
            raise ValueError(f'num_random: {num_random!r} not allowed (allowed: an int >= 0)')
        self.num_random = num_random
        self.sample_seed = sample_seed
        self.teacher, self.distill = teacher, distill
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
            logits = forward(inputs, mode='tensor', arch=self.space.largest(), weight_mode=self.TEACHERS[self.teacher])
            loss = self.teacher_loss(logits, labels)
        optim_wrapper.backward(loss)
        log_vars['loss_teacher'] = loss.detach()
        log_vars['acc_teacher'] = _top1(logits, labels)
        soft_targets = F.softmax(logits.detach(), dim=1)
        total = loss.detach()

        accs = []
        for name, arch in self.sandwich_archs(iteration):
            with optim_wrapper.optim_context(forward):
                logits = forward(inputs, mode='tensor', arch=arch, weight_mode=BINARY)
                loss = (self.distill_loss(logits, soft_targets) if self.distill else self.teacher_loss(logits, labels))
            optim_wrapper.backward(loss)
            log_vars[f'loss_{name}'] = loss.detach()
            log_vars[f'acc_{name}'] = _top1(logits, labels)
            accs.append(log_vars[f'acc_{name}'])
            total = total + loss.detach()
        if accs:
            log_vars['acc_students'] = torch.stack(accs).mean()
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        log_vars['loss'] = total
        # leave the model in its default evaluation state: largest subnet, binary weights
        self.backbone.set_subnet(self.space.largest(), BINARY)
        return log_vars
