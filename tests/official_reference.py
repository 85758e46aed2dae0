"""An independent restatement of the authors' NAS-BNN release (VDIGPKU/NAS-BNN), for tests.

Nothing here comes from this project's model code: the state-dict layout follows the release's
``SuperBNN`` (models/superbnn.py: ``features[0][0]`` a ``StemBlock``, ``features[s][j]`` a
``BasicBlock``), and :func:`reference_logits` re-implements its forward from the formulas of
models/dynamic_operations.py, models/operations.py and models/_utils.py, op by op in the
release's order (NCHW; BN, shortcut, ``move12`` bias, PReLU, ``move13`` bias; weights
``alpha * sign((W - mean) / W.std())``; the 8-bit stem as ``clamp(round_pass(W / s), -128, 127) * s``
with LSQ's ``grad_scale``), reading the authors' key names directly.
"""
from __future__ import annotations
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F

__all__ = ['official_layout', 'official_state_dict', 'realistic_official_state_dict', 'reference_logits']


def official_layout(space: dict, num_classes: int = 1000):
    """(key, shape, dtype) of the authors' SuperBNN state_dict, in their order, for a space in our
    dict form. Stage 0 is their StemBlock; stage s >= 1 block j: Ci = previous stage's max width
    for j == 0, else the stage's max; Co = the stage's max."""
    stages = space['stages']
    n_rows = 1 + sum(max(s['depths']) for s in stages)
    rows = [('biggest_cand', (n_rows, 6), torch.int64), ('smallest_cand', (n_rows, 6), torch.int64)]

    def bn(prefix, c):
        return [(f'{prefix}.bn.weight', (c, ), torch.float32), (f'{prefix}.bn.bias', (c, ), torch.float32),
                (f'{prefix}.bn.running_mean', (c, ), torch.float32), (f'{prefix}.bn.running_var', (c, ), torch.float32),
                (f'{prefix}.bn.num_batches_tracked', (), torch.int64)]

    def lb(name, c):  # LearnableBias
        return [(f'{name}.bias', (1, c, 1, 1), torch.float32)]

    c0 = max(space['stem']['widths'])
    k0 = space['stem'].get('kernel', 3)
    p = 'features.0.0'
    rows += [(f'{p}.conv.weight', (c0, 3, k0, k0), torch.float32), (f'{p}.conv.w_scale', (c0, ), torch.float32),
             (f'{p}.conv.w_init_state', (1, ), torch.float32)]
    rows += bn(f'{p}.bn', c0) + lb(f'{p}.move1', c0)
    rows += [(f'{p}.relu.prelu.weight', (c0, ), torch.float32)] + lb(f'{p}.move2', c0)
    prev_max = c0
    for si, s in enumerate(stages, start=1):
        co, ks, gmin = max(s['widths']), sorted(s['kernels']), min(s['groups'])
        kmax = ks[-1]
        for j in range(max(s['depths'])):
            ci = prev_max if j == 0 else co
            p = f'features.{si}.{j}'
            rows += lb(f'{p}.move11', ci)
            rows += [(f'{p}.binary_conv.weight', (ci, ci // gmin, kmax, kmax), torch.float32)]
            if len(ks) > 1:
                rows += [(f'{p}.binary_conv.matrix_{kmax}to{ks[0]}', (ks[0]**2, ks[0]**2), torch.float32)]
            if kmax != 1:
                rows += [(f'{p}.binary_conv.fp2bin_{kmax}', (kmax**2, kmax**2), torch.float32)]
            rows += [(f'{p}.binary_conv.scaling_factor', (ci, 1, 1, 1), torch.float32)]
            rows += bn(f'{p}.bn1', ci) + lb(f'{p}.move12', ci)
            rows += [(f'{p}.prelu1.prelu.weight', (ci, ), torch.float32)]
            rows += lb(f'{p}.move13', ci) + lb(f'{p}.move21', ci)
            rows += [(f'{p}.binary_conv1x1.weight', (co, ci, 1, 1), torch.float32),
                     (f'{p}.binary_conv1x1.scaling_factor', (co, 1, 1, 1), torch.float32)]
            rows += bn(f'{p}.bn2', co) + lb(f'{p}.move22', co)
            rows += [(f'{p}.prelu2.prelu.weight', (co, ), torch.float32)] + lb(f'{p}.move23', co)
        prev_max = co
    rows += [('fc.weight', (num_classes, prev_max), torch.float32), ('fc.bias', (num_classes, ), torch.float32)]
    return rows


def official_state_dict(space: dict, num_classes: int = 1000, seed: int = 0):
    """DDP-style (`module.`) state dict with distinct random values in every tensor (for mapping
    tests: values differ in range from tensor to tensor, not meant to be run)."""
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for i, (k, shape, dtype) in enumerate(official_layout(space, num_classes)):
        if dtype.is_floating_point:
            t = torch.randn(shape, generator=g) + 10.0 * i  # tensors differ in range too
        else:
            t = torch.randint(0, 1000, shape, generator=g, dtype=dtype) + 1000 * i
        sd['module.' + k] = t
    return sd


def realistic_official_state_dict(space: dict, num_classes: int = 10, seed: int = 0):
    """A runnable official-layout state dict (``module.`` prefix) as a trained network might hold:
    every BN statistic and affine parameter, bias, PReLU slope, kernel transform and
    Bi-Transformation matrix moved away from its initial value; the stem's LSQ steps set so that
    some weights clip at the ends of the 8-bit range; running variances of the order of the
    binary convolutions' output variance (activations stay O(1) through the network)."""
    g = torch.Generator().manual_seed(seed)

    def rn(*shape):
        return torch.randn(shape, generator=g)

    def ru(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    sd = OrderedDict()
    fan = {}
    for k, shape, dtype in official_layout(space, num_classes):
        if not dtype.is_floating_point:
            t = torch.randint(1, 1000, shape, generator=g, dtype=dtype)
        elif k.endswith('conv.weight') or k.endswith('conv1x1.weight'):
            t = 0.1 * rn(*shape)
            fan[k[:-len('.weight')]] = shape[1] * shape[2] * shape[3]
        elif '.matrix_' in k or '.fp2bin_' in k:
            t = torch.eye(shape[0]) + 0.15 * rn(*shape)
        elif k.endswith('.w_scale'):
            w = sd['module.' + k[:-len('w_scale')] + 'weight'].flatten(1)
            mean, std = w.mean(1), w.std(1)
            t = torch.maximum((mean - 3 * std).abs(), (mean + 3 * std).abs()) / 128 * ru(0.3, 1.2, *shape)
        elif k.endswith('.w_init_state'):
            t = torch.ones(shape)
        elif k.endswith('bn.weight'):
            t = 1 + 0.2 * rn(*shape)
        elif k.endswith('bn.bias'):
            t = 0.2 * rn(*shape)
        elif k.endswith('running_mean'):
            t = 0.3 * rn(*shape)
        elif k.endswith('running_var'):
            if '.bn1.' in k or '.bn2.' in k:  # binary conv output: alpha ~ 0.8, n terms of +-1
                conv = k.split('.bn1.')[0] + '.binary_conv' if '.bn1.' in k else k.split('.bn2.')[0] + '.binary_conv1x1'
                t = 0.64 * fan[conv] * ru(0.5, 2.0, *shape)
            else:  # the stem's 27 inputs times weights of std 0.1
                t = ru(0.1, 0.5, *shape)
        elif k.endswith('prelu.weight'):
            t = 0.25 + 0.1 * rn(*shape)
        elif k.endswith('.bias') and '.move' in k:
            t = 0.1 * rn(*shape)
        elif k == 'fc.weight':
            t = 0.05 * rn(*shape)
        elif k == 'fc.bias':
            t = 0.05 * rn(*shape)
        else:  # scaling_factor buffers: recomputed by every forward
            t = rn(*shape).abs()
        sd['module.' + k] = t
    return sd


# ----------------------------------------------------------------------------- the release's maths
def _grad_scale(x, scale):  # _utils.grad_scale
    y_grad = x * scale
    return x.detach() - y_grad.detach() + y_grad


def _round_pass(x):  # _utils.round_pass
    return x.round().detach() - x.detach() + x


def _sub_filter_start_end(kernel_size, sub_kernel_size):
    center, dev = kernel_size // 2, sub_kernel_size // 2
    return center - dev, center + dev + 1


def _active_filter(weight, inp, oup, ks, groups, ks_list, mats):
    """DynamicBinConv2d.get_active_filter."""
    max_ks = max(ks_list)
    start, end = _sub_filter_start_end(max_ks, ks)
    filters = weight[:oup, :inp, start:end, start:end]
    if ks < max_ks:
        start_filter = weight[:oup, :inp, :, :]
        for i in range(len(ks_list) - 1, 0, -1):
            src_ks = ks_list[i]
            if src_ks <= ks:
                break
            target_ks = ks_list[i - 1]
            start, end = _sub_filter_start_end(src_ks, target_ks)
            f = start_filter[:, :, start:end, start:end].contiguous()
            f = f.view(f.size(0), f.size(1), -1)
            f = f.view(-1, f.size(2))
            f = F.linear(f, mats[f'matrix_{src_ks}to{target_ks}'])
            f = f.view(filters.size(0), filters.size(1),
                       target_ks**2).view(filters.size(0), filters.size(1), target_ks, target_ks)
            start_filter = f
        filters = start_filter
    sub_filters = torch.chunk(filters, groups, dim=0)
    sub_inp = inp // groups
    sub_ratio = filters.size(1) // sub_inp
    crops = []
    for i, sub_filter in enumerate(sub_filters):
        start = (i % sub_ratio) * sub_inp
        crops.append(sub_filter[:, start:start + sub_inp, :, :])
    return torch.cat(crops, dim=0)


def _bin_conv(sd, p, x, oup, ks, groups, ks_list, stride, is_bin):
    """DynamicBinConv2d.forward (no distillation loss)."""
    inp = x.shape[1]
    oup = inp if oup == -1 else oup
    mats = {k[len(p):]: v for k, v in sd.items() if k.startswith(p + 'matrix_')}
    weight = _active_filter(sd[p + 'weight'], inp, oup, ks, groups, ks_list, mats)
    if is_bin and ks > 1 and ks == max(ks_list):  # fp2bin_filter
        oc, ic = weight.shape[:2]
        weight = F.linear(weight.view(oc, ic, -1).view(-1, ks**2), sd[f'{p}fp2bin_{ks}'])
        weight = weight.view(oc, ic, ks**2).view(oc, ic, ks, ks)
    weight = weight.contiguous()
    w_mean = weight.mean(dim=(1, 2, 3), keepdim=True)
    w_std = weight.std(dim=(1, 2, 3), keepdim=True)
    weight_n = (weight - w_mean) / w_std
    if is_bin:
        scaling = torch.mean(abs(weight_n), dim=(1, 2, 3), keepdim=True)
        weight_n = scaling * torch.sign(weight_n)
    return F.conv2d(x, weight_n, None, stride=stride, padding=(ks - 1) // 2, groups=groups)


def _bn(sd, p, x, training):  # DynamicBatchNorm2d (momentum 0.1, eps 1e-5); updates sd's running stats
    c = x.shape[1]
    rm, rv = sd[p + 'running_mean'], sd[p + 'running_var']
    if training:
        sd[p + 'num_batches_tracked'].add_(1)
    return F.batch_norm(x, rm[:c], rv[:c], sd[p + 'weight'][:c], sd[p + 'bias'][:c], training, 0.1, 1e-5)


def _move(sd, p, x):  # DynamicLearnableBias
    return x + sd[p + 'bias'][:, :x.size(1)].expand_as(x)


def _prelu(sd, p, x):  # DynamicPReLU
    return F.prelu(x, sd[p + 'prelu.weight'][:x.size(1)])


def _adaptive_add(src, residual):  # _utils.adaptive_add
    src_c, src_wh = src.shape[1], src.shape[2]
    residual_c, residual_wh = residual.shape[1], residual.shape[2]
    if src_wh != residual_wh:
        assert src_wh == residual_wh // 2, (src_wh, residual_wh)
        residual = F.avg_pool2d(residual, 2, stride=2)
    if src_c == residual_c:
        return src + residual
    return src + torch.cat([residual for _ in range(round(src_c / residual_c + 0.5))], dim=1)[:, :src_c]


def reference_logits(official_sd,
                     space: dict,
                     arch,
                     x: torch.Tensor,
                     teacher: bool = False,
                     training: bool = False) -> torch.Tensor:
    """Logits of the authors' SuperBNN for ``arch`` (our Architecture) on ``x`` (NCHW).

    ``official_sd``: their state dict (``module.`` prefix or not), converted to ``x``'s dtype by
    the caller; with ``training`` the batch statistics are used and the running statistics in
    ``official_sd`` are updated in place, as their BN does. ``teacher``: their ``set_fp_weight()``
    (full-precision normalized weights, no Bi-Transformation; activations stay binary)."""
    sd = {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in official_sd.items()}
    # stem: DynamicQConv2d (w_bit 8, a_bit None), BN, move1, PReLU, move2
    p = 'features.0.0.'
    c = arch.stem.width
    k0 = space['stem'].get('kernel', 3)
    weight = sd[p + 'conv.weight'][:c, :3].contiguous()
    w_scale = sd[p + 'conv.w_scale'][:c].clamp(torch.finfo(torch.float32).eps)
    g = 1.0 / math.sqrt(weight.numel() * 127)
    s = _grad_scale(w_scale, g).view(c, 1, 1, 1)
    weight = _round_pass(weight / s).clamp(-128, 127) * s
    out = F.conv2d(x, weight, None, stride=space['stem'].get('stride', 2), padding=(k0 - 1) // 2)
    out = _bn(sd, p + 'bn.bn.', out, training)
    out = _move(sd, p + 'move2.', _prelu(sd, p + 'relu.', _move(sd, p + 'move1.', out)))
    # blocks: BasicBlock
    for si, stage in enumerate(arch.stages):
        ks_list = sorted(set(space['stages'][si]['kernels']))
        for li, layer in enumerate(stage):
            p = f'features.{si + 1}.{li}.'
            stride = space['stages'][si].get('stride', 1) if li == 0 else 1
            res = out
            o1 = torch.sign(_move(sd, p + 'move11.', out))
            o1 = _bin_conv(sd, p + 'binary_conv.', o1, -1, layer.kernel, layer.groups, ks_list, stride, not teacher)
            o1 = _adaptive_add(_bn(sd, p + 'bn1.bn.', o1, training), res)
            o1 = _move(sd, p + 'move13.', _prelu(sd, p + 'prelu1.', _move(sd, p + 'move12.', o1)))
            o2 = torch.sign(_move(sd, p + 'move21.', o1))
            o2 = _bin_conv(sd, p + 'binary_conv1x1.', o2, layer.width, 1, 1, [1], 1, not teacher)
            o2 = _adaptive_add(_bn(sd, p + 'bn2.bn.', o2, training), o1)
            out = _move(sd, p + 'move23.', _prelu(sd, p + 'prelu2.', _move(sd, p + 'move22.', o2)))
    out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
    return F.linear(out, sd['fc.weight'][:, :out.shape[1]].contiguous(), sd['fc.bias'])
