"""8-bit LSQ (Learned Step Size Quantization, Esser et al.) for the stem conv's weights."""
from __future__ import annotations
import math
from typing import Dict, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .packing import FP32, INT8, Field, PackedFormatError

__all__ = ['lsq_quantize', 'LSQConv2d']


def _grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    # value of x, gradient multiplied by `scale`
    return (x - x * scale).detach() + x * scale


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x


def lsq_quantize(w: torch.Tensor, step: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Fake-quantize ``w`` (out, ...) with per-output-channel ``step`` on the signed grid
    [-2^(b-1), 2^(b-1)-1]: ``clamp(round(w / s), qn, qp) * s``, rounded first and clamped
    after, as the authors' release (the paper defers to it). Gradients: straight-through
    where the *rounded* value lies in the range (0 outside) for w; LSQ's step gradient,
    (round(w/s) - w/s) inside and qn / qp outside, scaled by 1 / sqrt(numel(w) * Qp)."""
    qn, qp = -(2**(bits - 1)), 2**(bits - 1) - 1
    g = 1.0 / math.sqrt(w.numel() * qp)
    s = _grad_scale(step, g).view(-1, *([1] * (w.dim() - 1)))
    return torch.clamp(_round_ste(w / s), qn, qp) * s


class LSQConv2d(nn.Module):
    """Conv with LSQ-quantized weights and full-precision input (the NAS-BNN stem).

    The weight holds ``max_out`` filters; a forward uses the first ``out_channels`` of them.
    The step sizes are initialised from the data on the first training forward:
    s_c = max(|mean_c - 3 std_c|, |mean_c + 3 std_c|) / 2^(b-1).

    Forms: dynamic (any ``out_channels`` up to ``max_out``), static (``to_static(C)``), deployed
    (``to_deployed()``: the weight holds the quantized values ``q * step`` exactly, so that the
    forward's re-quantization gives the same integers q; stored as int8 q and float32 steps).
    """

    def __init__(self, in_channels: int, max_out: int, kernel_size: int = 3, stride: int = 2, bits: int = 8):
        super().__init__()
        self.in_channels, self.max_out, self.kernel_size = in_channels, max_out, kernel_size
        self.stride, self.bits = stride, bits
        self.weight = nn.Parameter(torch.empty(max_out, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.step = nn.Parameter(torch.ones(max_out))
        self.register_buffer('step_initialized', torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def init_step(self):
        w = self.weight.flatten(1)
        mean, std = w.mean(1), w.std(1)
        self.step.copy_(torch.maximum((mean - 3 * std).abs(), (mean + 3 * std).abs()) / 2**(self.bits - 1))
        self.step_initialized.fill_(True)

    def quantized_weight(self, out_channels: int) -> torch.Tensor:
        step = self.step[:out_channels]
        # the step's value is kept >= eps; its gradient passes unchanged (the authors clamp the
        # parameter's data in place, which autograd does not see either)
        step = step + (step.clamp(min=torch.finfo(step.dtype).eps) - step).detach()
        return lsq_quantize(self.weight[:out_channels], step, self.bits)

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        if self.training and not bool(self.step_initialized):
            self.init_step()
        return F.conv2d(x, self.quantized_weight(out_channels), None, self.stride, self.kernel_size // 2)

    @torch.no_grad()
    def to_static(self, out_channels: int) -> 'LSQConv2d':
        m = LSQConv2d(self.in_channels, out_channels, self.kernel_size, self.stride, self.bits).to(self.weight)
        m.weight.copy_(self.weight[:out_channels])
        m.step.copy_(self.step[:out_channels])
        m.step_initialized.copy_(self.step_initialized)
        return m

    @torch.no_grad()
    def to_deployed(self) -> 'LSQConv2d':
        m = self.to_static(self.max_out)
        m.weight.copy_(self.integer_weight().to(self.weight.dtype) * self._clamped_step().view(-1, 1, 1, 1))
        m.step_initialized.fill_(True)
        return m

    def _clamped_step(self) -> torch.Tensor:
        return self.step.clamp(min=torch.finfo(self.step.dtype).eps)

    @torch.no_grad()
    def integer_weight(self) -> torch.Tensor:
        """The integers q with quantized weight = q * step (int8 for 8 bits), checked exact."""
        if self.bits > 8:
            raise PackedFormatError(f'{self.bits}-bit weights not allowed (allowed: at most 8 bits)')
        wq = self.quantized_weight(self.max_out)
        step = self._clamped_step().view(-1, 1, 1, 1)
        q = torch.round(wq / step)
        if q.min() < -128 or q.max() > 127 or not torch.equal(lsq_quantize(q * step, step.flatten(), self.bits), wq):
            raise PackedFormatError('the quantized weight is not an int8 multiple of its step')
        return q.to(torch.int8)

    # packed form (see ops/packing.py)
    def packed_fields(self) -> List[Field]:
        return [Field(INT8, 'weight', tuple(self.weight.shape)), Field(FP32, 'step', (self.max_out, ))]

    def packed_values(self) -> List[torch.Tensor]:
        return [self.integer_weight().reshape(-1), self._clamped_step().detach().float()]

    def unpacked_state(self, values: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        q, step = values
        return dict(
            weight=q.float().reshape(self.weight.shape) * step.view(-1, 1, 1, 1),
            step=step,
            step_initialized=torch.ones((), dtype=torch.bool))

    def extra_repr(self) -> str:
        return f'{self.in_channels}, {self.max_out}, k={self.kernel_size}, s={self.stride}, bits={self.bits}'
