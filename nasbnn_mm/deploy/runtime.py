"""A 1-bit inference runtime for exported NAS-BNN subnets.

:class:`BinaryRuntime` runs a deployed subnet classifier (:class:`~nasbnn_mm.models.NASBNNDeployedSubnet`
+ global average pooling + linear head) with its binary convs as real 1-bit convolutions
(:class:`~nasbnn_mm.deploy.BinaryConvKernel`: XNOR-popcount on packed bits, or an exact oneDNN
backend) and computes the same float32 numbers as the float deployed model, bitwise:

* stem: the deployed model's own float32 ``F.conv2d`` on the image (8-bit weights times their steps),
  channels_last like the deployed model, then the folded BN and RPReLU (:class:`~nasbnn_mm.deploy.glue.Glue`);
* every binary conv: ``s = sign(x + b)`` packed to bits (the RSign threshold folded into the packing),
  ``float32(acc) * alpha`` with ``acc`` the exact integer sum, then the glue (folded BN as PyTorch's BN
  rounds it, + shortcut, RPReLU): with the popcount backend one native call per conv, the glue applied
  to each block of output rows as soon as the conv has written it;
* head: the same ``F.adaptive_avg_pool2d`` and ``F.linear`` as mmpretrain's GAP neck and linear head.

The deployed model computes its binary convs as ``F.conv2d(sign(x + b), sign(w)) * alpha`` (exact
integer sums, one rounding: :class:`~nasbnn_mm.ops.DeployedBinaryConv2d`), so the two agree bit for bit
(``tests/test_deploy_runtime.py``).

Load from a file with :func:`load_runtime` (a packed ``subnet_packed.pth`` or an exported ``subnet.pth``),
or wrap a model with :meth:`BinaryRuntime.from_deployed`. The weights are held as packed bits (1 bit per
binary weight, padded to 32-bit words and 16-channel lanes) plus float32 vectors, the stem and the head:
:attr:`BinaryRuntime.nbytes` is about the packed file's size.
"""
from __future__ import annotations
import contextlib
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from .bitconv import BACKENDS, BinaryConvKernel
from .glue import Glue
from .native import bitconv_ops

__all__ = [
    'BinaryRuntime', 'RuntimeConv', 'RuntimeBackbone', 'runtime_detector', 'load_runtime', 'deployed_classifier',
    'checkpoint_kind', 'load_packed'
]

_BACKEND_CHOICES = ('auto', ) + BACKENDS


def _bn(bn) -> Tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of a deployed (folded) BN: F.batch_norm with mean 0, var 1, eps 0 is x * weight + bias."""
    if bn.eps != 0 or bn.training or not (torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1)):
        raise ValueError('bn: not allowed (allowed: a deployed, folded BN: eval mode, mean 0, variance 1, eps 0; '
                         'call to_deployed() first)')
    return bn.weight.detach(), bn.bias.detach()


def _rprelu(act) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return act.bias_in.detach(), act.slope.detach(), act.bias_out.detach()


class RuntimeConv:
    """One binary conv of the runtime with everything after it: RSign threshold -> 1-bit conv -> folded BN
    -> + shortcut -> RPReLU.

    Attributes:
        name (str): the deployed module's name, e.g. 'stages.1.0.conv_kxk'.
        kernel (BinaryConvKernel): the conv (packed weights, alpha).
        threshold (Tensor): the RSign bias b of sign(x + b), float32 (in_channels,).
        glue (Glue): BN, shortcut (residual stride) and RPReLU.
    """

    def __init__(self, name: str, kernel: BinaryConvKernel, threshold: torch.Tensor, glue: Glue):
        self.name, self.kernel, self.glue = name, kernel, glue
        self.threshold = threshold.detach().to(torch.float32).contiguous().clone()

    def __call__(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.kernel.fused(x, self.threshold, self.glue, residual)

    @property
    def nbytes(self) -> int:
        return self.kernel.nbytes + self.glue.nbytes + 4 * self.threshold.numel()


class BinaryRuntime:
    """Inference-only NAS-BNN classifier (or backbone) on 1-bit kernels; see the module doc.

    Build with :meth:`from_deployed` or :func:`load_runtime`.

    Call: ``runtime(images)`` with ``images`` float32 (N, 3, H, W), already normalized as the model's data
    preprocessor does (mean = std = 127.5 for our configs; :mod:`nasbnn_mm.deploy.infer` reads image files),
    returns the logits (N, num_classes), float32. ``features(images)`` gives the backbone's stage outputs
    (its ``out_indices``), channels_last.

    Attributes:
        arch: the architecture (:class:`~nasbnn_mm.space.Architecture`).
        convs (list[RuntimeConv]): the binary convs in forward order (2 per layer).
        meta (dict): the checkpoint's meta (class names in ``meta['dataset_meta']['classes']``), or {}.
        threads (int or None): intra-op threads of each call (None: leave torch's setting).
    """

    def __init__(self):
        raise TypeError('BinaryRuntime: build it with BinaryRuntime.from_deployed(model) or load_runtime(path)')

    # ------------------------------------------------------------------ construction
    @classmethod
    @torch.no_grad()
    def from_deployed(cls,
                      model,
                      backend: str = 'auto',
                      threads: Optional[int] = None,
                      isa: Optional[str] = None,
                      meta: Optional[dict] = None) -> 'BinaryRuntime':
        """The runtime of a deployed model (its tensors are copied; the model is not needed afterwards).

        Args:
            model: an ImageClassifier whose backbone is a :class:`~nasbnn_mm.models.NASBNNDeployedSubnet`,
                neck global average pooling and head a linear head (``head.fc``), e.g. from
                :func:`nasbnn_mm.models.load_packed`; or the deployed backbone alone (then only
                :meth:`features` works).
            backend (str): the binary convs' backend: 'auto' (timed per layer shape on the first call and
                cached, see :meth:`BinaryConvKernel.tune`) or one of 'popcount', 'int8', 'int8_mm' (1x1 convs;
                the others fall back to 'auto'), 'bf16', 'fp32', 'reference'.
            threads (int, optional): intra-op threads during calls (default: torch's setting).
            isa (str, optional): force the popcount / glue instruction-set path ('scalar', 'avx2', 'avx512').
            meta (dict, optional): checkpoint meta kept on the runtime (class names, preprocessing).
        """
        if backend not in _BACKEND_CHOICES:
            raise ValueError(f'backend: {backend!r} not allowed (allowed: {", ".join(_BACKEND_CHOICES)})')
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f'threads: {threads!r} not allowed (allowed: a positive integer)')
        backbone = getattr(model, 'backbone', model)
        if not getattr(backbone, '_deployed', False) or not hasattr(backbone, 'stages'):
            raise ValueError(f'model: {type(backbone).__name__} not allowed (allowed: a NASBNNDeployedSubnet, or an '
                             'ImageClassifier around one; NASBNNSubnet.to_deployed() gives it)')
        if backbone.training:
            raise ValueError('model: in training mode not allowed (allowed: eval mode; the BN is folded)')
        self = object.__new__(cls)
        self.arch, self.space = backbone.arch, backbone.space
        self.out_indices = tuple(backbone.out_indices)
        self.meta = dict(meta or {})
        self.threads = threads
        self.backend = backend
        self._nchw_float = bool(getattr(backbone, 'exact_parity', False))  # the stem conv and GAP in NCHW
        stem = backbone.stem
        width = self.arch.stem.width
        self._stem_weight = stem.conv.quantized_weight(width).detach().clone()
        self._stem_stride, self._stem_pad = stem.conv.stride, stem.conv.kernel_size // 2
        self._stem_glue = Glue(width, _bn(stem.bn), _rprelu(stem.act), 1, isa)
        self.convs: List[RuntimeConv] = []
        self._stage_ends: List[int] = []  # index into convs after each stage
        for si, layers in enumerate(backbone.stages):
            for li, (layer, ch) in enumerate(zip(layers, self.arch.stages[si])):
                name = f'stages.{si}.{li}'
                for part, sign, conv, bn, act, stride in (('conv_kxk', layer.sign1, layer.conv_kxk, layer.bn1,
                                                           layer.act1, layer.stride),
                                                          ('conv_1x1', layer.sign2, layer.conv_1x1, layer.bn2,
                                                           layer.act2, 1)):
                    kern_backend = backend
                    if backend == 'int8_mm' and (conv.kernel != 1 or conv.groups != 1):
                        kern_backend = 'auto'
                    kern = BinaryConvKernel(
                        conv.sign.detach(), conv.alpha.detach().float(), conv.groups, stride, kern_backend, isa=isa)
                    glue = Glue(conv.out_channels, _bn(bn), _rprelu(act), stride, isa)
                    self.convs.append(RuntimeConv(f'{name}.{part}', kern, sign.bias, glue))
            self._stage_ends.append(len(self.convs))
        head = getattr(getattr(model, 'head', None), 'fc', None)
        neck = getattr(model, 'neck', None)
        if head is not None and type(neck).__name__ != 'GlobalAveragePooling':
            raise ValueError(f'model.neck: {type(neck).__name__} not allowed (allowed: GlobalAveragePooling)')
        self._fc = None if head is None else (head.weight.detach().clone(), head.bias.detach().clone())
        return self

    # ------------------------------------------------------------------ properties
    @property
    def num_classes(self) -> Optional[int]:
        return None if self._fc is None else self._fc[0].shape[0]

    @property
    def classes(self) -> Optional[List[str]]:
        """Class names from the checkpoint's ``meta['dataset_meta']['classes']``, if recorded."""
        classes = (self.meta.get('dataset_meta') or {}).get('classes')
        return list(classes) if classes else None

    @property
    def nbytes(self) -> int:
        """Bytes of the weights held: packed binary weights (and any weight copies an oneDNN backend made),
        float32 vectors (alpha, thresholds, BN, RPReLU), the stem's float32 weights and the head."""
        n = sum(c.nbytes for c in self.convs) + self._stem_glue.nbytes
        n += self._stem_weight.numel() * 4
        if self._fc is not None:
            n += sum(t.numel() * t.element_size() for t in self._fc)
        return n

    def backends(self) -> 'OrderedDict[str, str]':
        """The backend each binary conv ran on its last call ('auto' before the first call with 'auto')."""
        return OrderedDict((c.name, c.kernel.backend) for c in self.convs)

    def __repr__(self) -> str:
        counts: Dict[str, int] = {}
        for b in self.backends().values():
            counts[b] = counts.get(b, 0) + 1
        return (f'BinaryRuntime({self.arch.to_text()!r}, {len(self.convs)} binary convs, backends {counts}, '
                f'{self.nbytes / 2**20:.2f} MiB)')

    # ------------------------------------------------------------------ inference
    @contextlib.contextmanager
    def _threads(self):
        old = torch.get_num_threads()
        if self.threads is not None and self.threads != old:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            if torch.get_num_threads() != old:
                torch.set_num_threads(old)

    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        cin = self._stem_weight.shape[1]
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != cin:
            what = f'{images.dtype} {tuple(images.shape)}' if isinstance(images,
                                                                         torch.Tensor) else type(images).__name__
            raise ValueError(f'images: {what} not allowed (allowed: float32 (N, {cin}, H, W), normalized)')
        if images.dtype != torch.float32 or images.device.type != 'cpu':
            raise ValueError(f'images: {images.dtype} on {images.device} not allowed (allowed: float32 on cpu, '
                             'normalized as the data preprocessor does)')
        return images

    def _stem(self, images: torch.Tensor) -> torch.Tensor:
        fmt = torch.contiguous_format if self._nchw_float else torch.channels_last
        x = F.conv2d(images.contiguous(memory_format=fmt), self._stem_weight, None, self._stem_stride, self._stem_pad)
        return self._stem_glue(x.contiguous(memory_format=torch.channels_last))

    def _layers(self, x: torch.Tensor) -> List[torch.Tensor]:
        outs, ci = [], 0
        for si, end in enumerate(self._stage_ends):
            for i in range(ci, end, 2):
                y = self.convs[i](x, x)  # the k x k conv; shortcut: the layer's input
                x = self.convs[i + 1](y, y)  # the 1 x 1 conv; shortcut: the k x k part's output
            ci = end
            if si in self.out_indices:
                outs.append(x)
        return outs

    def features(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The stage outputs of the backbone's ``out_indices`` (float32, channels_last), as the deployed
        backbone returns them."""
        images = self._check_images(images)
        with torch.no_grad(), self._threads():
            return tuple(self._layers(self._stem(images)))

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        if self._nchw_float:
            x = x.contiguous()
        feats = F.adaptive_avg_pool2d(x, (1, 1)).view(x.size(0), -1)  # mmpretrain's GlobalAveragePooling
        return F.linear(feats, *self._fc)  # LinearClsHead.fc

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self._fc is None:
            raise ValueError('runtime: built from a backbone without a head (allowed: features(images))')
        images = self._check_images(images)
        with torch.no_grad(), self._threads():
            return self._head(self._layers(self._stem(images))[-1])

    # ------------------------------------------------------------------ where the time goes
    def time_parts(self, images: torch.Tensor, repeats: int = 5, clock=time.perf_counter) -> 'OrderedDict[str, float]':
        """Median milliseconds of each part of an unfused run (for an Amdahl table): 'stem' (float conv),
        'rsign' (sign(x + b) and bit packing of every binary conv's input), 'binary convs' (XNOR-popcount
        on packed inputs, or the whole conv with another backend), 'glue' (folded BN, shortcuts, RPReLU:
        the stem's and every conv's), 'head' (GAP + linear), 'total' (their sum) and 'fused total' (a
        normal call, where the glue runs inside the conv calls).

        With the popcount backend the packing and the conv are timed apart (the ops ``pack_activations`` and
        ``conv_packed``; the packed planes then go through memory once more than in a normal call).
        ``clock``: the timer (default wall clock; ``time.process_time`` counts this process's CPU time only,
        robust to other load on a shared machine, and equal to the latency at 1 thread on an idle one).
        """
        images = self._check_images(images)
        ops = bitconv_ops()
        parts = ('stem', 'rsign', 'binary convs', 'glue', 'head')
        times: Dict[str, List[float]] = {p: [] for p in parts + ('fused total', )}
        with torch.no_grad(), self._threads():
            self(images)  # resolves 'auto' and warms up
            for _ in range(max(1, int(repeats))):
                acc = dict.fromkeys(parts, 0.0)
                t0 = clock()
                fmt = torch.contiguous_format if self._nchw_float else torch.channels_last
                x = F.conv2d(
                    images.contiguous(memory_format=fmt), self._stem_weight, None, self._stem_stride,
                    self._stem_pad).contiguous(memory_format=torch.channels_last)
                t1 = clock()
                x = self._stem_glue(x)
                t2 = clock()
                acc['stem'] += t1 - t0
                acc['glue'] += t2 - t1
                ci = 0
                for end in self._stage_ends:
                    for i in range(ci, end, 2):
                        y = self._timed_conv(self.convs[i], x, x, ops, acc, clock)
                        x = self._timed_conv(self.convs[i + 1], y, y, ops, acc, clock)
                    ci = end
                t0 = clock()
                self._head(x)
                acc['head'] += clock() - t0
                for p in parts:
                    times[p].append(acc[p])
                t0 = clock()
                self(images)
                times['fused total'].append(clock() - t0)
        med = OrderedDict((p, 1e3 * float(torch.tensor(v).median())) for p, v in times.items() if p != 'fused total')
        med['total'] = sum(med.values())
        med['fused total'] = 1e3 * float(torch.tensor(times['fused total']).median())
        return med

    @staticmethod
    def _timed_conv(conv: RuntimeConv, x, residual, ops, acc, clock) -> torch.Tensor:
        kern = conv.kernel
        t0 = clock()
        if kern.backend == 'popcount' and ops is not None:
            s, z, any_zero = ops.pack_activations(x, conv.threshold, kern.groups, kern.kernel_size, kern._isa_code)
            t1 = clock()
            y = ops.conv_packed(s, z, any_zero, kern.in_channels, kern._words, kern.alpha, None, None, kern.groups,
                                kern.kernel_size, kern.stride, True, kern._isa_code)
        else:
            t1 = t0
            y = kern(x, conv.threshold)
        t2 = clock()
        y = conv.glue(y, residual)
        t3 = clock()
        acc['rsign'] += t1 - t0
        acc['binary convs'] += t2 - t1
        acc['glue'] += t3 - t2
        return y


class RuntimeBackbone(torch.nn.Module):
    """A NAS-BNN backbone on the 1-bit runtime as an ``nn.Module`` (inference only), e.g. the backbone of an
    mmdet detector in test mode: ``forward(x)`` returns the stage outputs of its ``out_indices`` (float32,
    NCHW-contiguous: mmcv's CPU RoIAlign reads NCHW memory whatever the strides), equal to the deployed
    backbone's bitwise (and to the static backbone's up to float rounding). Build with :meth:`from_backbone`;
    :func:`runtime_detector` swaps a detector's backbone.

    Attributes:
        runtime (BinaryRuntime): the runtime (``features``).
    """

    def __init__(self, runtime: BinaryRuntime):
        super().__init__()
        self.runtime = runtime
        self.eval()

    @classmethod
    def from_backbone(cls,
                      backbone,
                      backend: str = 'auto',
                      threads: Optional[int] = None,
                      isa: Optional[str] = None) -> 'RuntimeBackbone':
        """From a static NAS-BNN backbone in eval mode (a :class:`~nasbnn_mm.models.NASBNNSubnet`, e.g.
        mmdet's ``nasbnn.NASBNNDetBackbone``; turned into the deployed form with its ``to_deployed``) or a
        deployed one."""
        if backbone.training:
            raise ValueError('backbone: in training mode not allowed (allowed: eval mode: its BN statistics are '
                             'folded)')
        if not getattr(backbone, '_deployed', False):
            if not hasattr(backbone, 'to_deployed'):
                raise ValueError(f'backbone: {type(backbone).__name__} not allowed (allowed: a NAS-BNN subnet '
                                 'backbone, static or deployed)')
            backbone = backbone.to_deployed()
        return cls(BinaryRuntime.from_deployed(backbone, backend, threads, isa))

    @property
    def out_indices(self) -> Tuple[int, ...]:
        return self.runtime.out_indices

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError('RuntimeBackbone: inference only (the 1-bit runtime has no gradients)')
        return super().train(False)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(o.contiguous() for o in self.runtime.features(x))

    def extra_repr(self) -> str:
        return repr(self.runtime)


def runtime_detector(detector, backend: str = 'auto', threads: Optional[int] = None, isa: Optional[str] = None):
    """Put an mmdet detector whose backbone is a NAS-BNN subnet (``nasbnn.NASBNNDetBackbone``) into eval mode
    with its backbone on the 1-bit runtime (:class:`RuntimeBackbone`); neck and heads stay as they are.
    Returns the detector (test mode only afterwards)."""
    detector.eval()
    detector.backbone = RuntimeBackbone.from_backbone(detector.backbone, backend, threads, isa)
    return detector


# ---------------------------------------------------------------------------- loading
def checkpoint_kind(ckpt) -> str:
    """'packed' (a ``subnet_packed.pth``: meta.format nasbnn-packed-v1) or 'exported' (a ``subnet.pth`` of
    tools/export_subnet.py: meta.arch and backbone.* / head.fc.* tensors); a one-line error otherwise."""
    from ..models.packed import PACKED_FORMAT
    from ..ops import PackedFormatError
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get('meta'), dict) or not isinstance(
            ckpt.get('state_dict'), dict):
        raise PackedFormatError("checkpoint: not allowed (allowed: a packed subnet (subnet_packed.pth) or an exported "
                                "subnet (subnet.pth): a dict with 'meta' and 'state_dict')")
    meta, sd = ckpt['meta'], ckpt['state_dict']
    if 'format' in meta:
        if meta['format'] != PACKED_FORMAT:
            raise PackedFormatError(f"checkpoint meta.format: {meta['format']!r} not allowed (allowed: "
                                    f'{PACKED_FORMAT!r}, or an exported subnet.pth without a format)')
        return 'packed'
    if 'arch' in meta and any(k.startswith('backbone.') for k in sd) and 'head.fc.weight' in sd:
        return 'exported'
    raise PackedFormatError("checkpoint: neither a packed subnet (meta.format missing) nor an exported subnet "
                            "(allowed: meta.arch with 'backbone.*' and 'head.fc.*' tensors, as tools/export_subnet.py "
                            'writes)')


def _to_packed(ckpt) -> dict:
    """The packed form of a packed or exported checkpoint dict (an export is packed: its static backbone is
    turned into the deployed form by ``NASBNNSubnet.to_deployed``, inside ``pack_subnet``)."""
    from ..models.packed import pack_subnet
    if checkpoint_kind(ckpt) == 'packed':
        return ckpt
    meta = dict(ckpt['meta'])
    settings = meta.get('backbone_settings')
    if isinstance(settings, dict):  # the weight normalization the export recorded
        for k in ('wn_eps', 'wn_unbiased'):
            if k in settings:
                meta.setdefault(k, settings[k])
    return pack_subnet(ckpt['state_dict'], meta['arch'], meta)


def _read(path_or_ckpt, trusted: bool = False) -> dict:
    if isinstance(path_or_ckpt, dict):
        return path_or_ckpt
    from ..utils.checkpoint import load_checkpoint_file
    if not isinstance(path_or_ckpt, str):
        raise TypeError(f'checkpoint: {type(path_or_ckpt).__name__} not allowed (allowed: a path or a loaded dict)')
    return load_checkpoint_file(path_or_ckpt, trusted=trusted)


def load_packed(path_or_ckpt, trusted: bool = False) -> dict:
    """The packed form of a packed or exported checkpoint (path, loaded safely unless ``trusted``, or its
    dict): read and pack once, then hand the dict to :func:`load_runtime` / :func:`deployed_classifier`."""
    return _to_packed(_read(path_or_ckpt, trusted))


@torch.no_grad()
def deployed_classifier(path_or_ckpt, signs: str = 'float', trusted: bool = False):
    """(deployed ImageClassifier in eval mode, meta) of a packed or exported checkpoint (path or loaded dict):
    the float model the runtime equals. ``signs='bool'`` builds it on the meta device with bool sign
    tensors (what :func:`load_runtime` reads: no float copy of the binary weights; not runnable)."""
    from ..models.packed import build_deployed_classifier, unpack_subnet
    sd, arch, meta = unpack_subnet(load_packed(path_or_ckpt, trusted), signs=signs)
    num_classes = int(meta['num_classes'])
    if signs == 'bool':
        with torch.device('meta'):
            model = build_deployed_classifier(arch, meta['search_space'], num_classes)
        model.load_state_dict(sd, strict=True, assign=True)
    else:
        model = build_deployed_classifier(arch, meta['search_space'], num_classes, meta.get('data_preprocessor'))
        model.load_state_dict(sd, strict=True)
    return model.eval(), meta


def load_runtime(path_or_ckpt,
                 backend: str = 'auto',
                 threads: Optional[int] = None,
                 isa: Optional[str] = None,
                 trusted: bool = False) -> BinaryRuntime:
    """The 1-bit runtime of a packed (``subnet_packed.pth``) or exported (``subnet.pth``) subnet.

    Args:
        path_or_ckpt: the file (loaded safely, weights only; ``trusted`` allows full unpickling) or its dict.
        backend, threads, isa: as :meth:`BinaryRuntime.from_deployed`.

    Returns:
        BinaryRuntime: with ``meta`` the checkpoint's (class names, preprocessing, arch).
    """
    model, meta = deployed_classifier(path_or_ckpt, signs='bool', trusted=trusted)
    return BinaryRuntime.from_deployed(model, backend, threads, isa, meta)
