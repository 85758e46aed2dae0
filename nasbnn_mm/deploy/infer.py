"""Classify image files with the 1-bit runtime (the logic of ``tools/infer.py``).

Preprocessing, as mmpretrain's test pipeline and data preprocessor do for our configs:

* decode with mmcv (``LoadImageFromFile``: BGR, uint8);
* size (``img_size`` S: ``--img-size``, else the checkpoint's ``meta['img_size']`` — the size the export
  counted OPs at: 224 for ImageNet, 32 for the CIFAR demo — else 224):

  - S >= 64 (ImageNet style, ``configs/_base_/datasets/imagenet_nasbnn.py``): ``ResizeEdge`` of the short
    edge to round(S * 256 / 224), then ``CenterCrop`` S;
  - S < 64 (CIFAR style, ``configs/_base_/datasets/cifar10_folders.py``, whose test pipeline takes the
    32 x 32 images as they are): ``Resize`` to S x S (a 32 x 32 CIFAR image is left unchanged);
* normalize with the checkpoint's ``meta['data_preprocessor']`` (mean, std, to_rgb; the export records
  it) if present, else our configs' ``mean = std = 127.5`` per channel, BGR -> RGB
  (``ClsDataPreprocessor``).

Scores are the softmax of the logits (mmpretrain's ``pred_score``); class names come from
``meta['dataset_meta']['classes']`` when the checkpoint records them, else the class index.
"""
from __future__ import annotations
import json
import math
import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

__all__ = ['IMAGE_EXTENSIONS', 'list_images', 'input_size', 'Preprocess', 'classify', 'format_predictions']

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp')
DEFAULT_PREPROCESSOR = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5], to_rgb=True)
SMALL_INPUT = 64  # below: CIFAR-style resize of the whole image; from here on: resize + centre crop


def list_images(path: str) -> List[str]:
    """``path`` itself (a file) or the image files directly in the folder ``path`` (sorted by name)."""
    if os.path.isdir(path):
        files = sorted(
            os.path.join(path, f) for f in os.listdir(path)
            if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, f)))
        if not files:
            raise FileNotFoundError(f'images: no image files in folder {path!r} (allowed: '
                                    f'{", ".join(IMAGE_EXTENSIONS)})')
        return files
    if not os.path.isfile(path):
        raise FileNotFoundError(f'images: no such file or folder {path!r}')
    return [path]


def input_size(meta: dict, img_size: Optional[Sequence[int]] = None) -> tuple:
    """(H, W) of the network input: ``img_size`` (int or (H, W)), else ``meta['img_size']``, else 224."""
    size = img_size if img_size is not None else meta.get('img_size', 224)
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 4096 for v in size)):
        raise ValueError(f'img_size: {size!r} not allowed (allowed: N or (H, W), 8..4096)')
    return tuple(int(v) for v in size)


class Preprocess:
    """Image file -> normalized float32 (3, H, W) tensor, as mmpretrain's pipeline (see the module doc).

    Args:
        meta (dict): the checkpoint's meta (``img_size``, ``data_preprocessor``).
        img_size: override of the input size (int or (H, W)).
    """

    def __init__(self, meta: dict, img_size=None):
        from mmcv.transforms import LoadImageFromFile, Resize
        from mmpretrain.datasets.transforms import CenterCrop, ResizeEdge
        self.size = input_size(meta, img_size)
        h, w = self.size
        self._load = LoadImageFromFile()
        if min(h, w) >= SMALL_INPUT:
            short = int(round(min(h, w) * 256 / 224))
            self._steps = [ResizeEdge(scale=short, edge='short'), CenterCrop(crop_size=(w, h))]
            self.mode = f'short edge -> {short}, centre crop {h}x{w}'
        else:
            self._steps = [Resize(scale=(w, h), keep_ratio=False)]
            self.mode = f'resize to {h}x{w}'
        dp = meta.get('data_preprocessor') or DEFAULT_PREPROCESSOR
        mean, std = dp.get('mean', DEFAULT_PREPROCESSOR['mean']), dp.get('std', DEFAULT_PREPROCESSOR['std'])
        if not all(isinstance(v, (list, tuple)) and len(v) == 3 for v in (mean, std)):
            raise ValueError(f'meta.data_preprocessor: mean {mean!r} / std {std!r} not allowed (allowed: 3 values '
                             'each)')
        self.mean = torch.tensor([float(v) for v in mean]).view(-1, 1, 1)
        self.std = torch.tensor([float(v) for v in std]).view(-1, 1, 1)
        self.to_rgb = bool(dp.get('to_rgb', dp.get('bgr_to_rgb', False)))
        self.mode += f', mean {list(mean)} std {list(std)}{", BGR -> RGB" if self.to_rgb else ""}'

    def __call__(self, path: str) -> torch.Tensor:
        try:
            results = self._load(dict(img_path=path))
        except Exception as e:  # mmcv raises various errors for unreadable files
            raise ValueError(f'image {path!r}: cannot be decoded ({type(e).__name__}; allowed: '
                             f'{", ".join(IMAGE_EXTENSIONS)} images)') from None
        if results is None or results.get('img') is None:
            raise ValueError(f'image {path!r}: cannot be decoded (allowed: {", ".join(IMAGE_EXTENSIONS)} images)')
        for step in self._steps:
            results = step(results)
        img = results['img']
        if img.ndim == 2:
            img = img[:, :, None].repeat(3, axis=2)
        # PackInputs: HWC -> CHW; ClsDataPreprocessor: channel flip, float, (x - mean) / std
        x = torch.from_numpy(img.copy()).permute(2, 0, 1).contiguous()
        if self.to_rgb:
            x = x[[2, 1, 0], ...]
        return (x.float() - self.mean) / self.std


def classify(runtime,
             paths: Sequence[str],
             preprocess: Callable[[str], torch.Tensor],
             topk: int = 5,
             batch_size: int = 8) -> List[Dict]:
    """Top-k predictions for each image: ``[{'path', 'labels': [int], 'scores': [float], 'classes': [str]}]``."""
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f'topk: {topk!r} not allowed (allowed: a positive integer)')
    k = min(topk, runtime.num_classes)
    names = runtime.classes
    out = []
    for i in range(0, len(paths), batch_size):
        chunk = list(paths[i:i + batch_size])
        images = torch.stack([preprocess(p) for p in chunk])
        probs = torch.softmax(runtime(images), dim=1)
        scores, labels = probs.topk(k, dim=1)
        for p, s, l in zip(chunk, scores.tolist(), labels.tolist()):
            out.append(
                dict(path=p, labels=l, scores=s, classes=[names[j] if names and j < len(names) else str(j) for j in l]))
    return out


def format_predictions(results: List[Dict]) -> str:
    """Text lines: the image path, then ``rank. class  score`` per prediction."""
    lines = []
    for r in results:
        lines.append(r['path'])
        width = max(len(c) for c in r['classes'])
        for rank, (c, s) in enumerate(zip(r['classes'], r['scores']), 1):
            lines.append(f'  {rank}. {c:<{width}}  {s:.4f}' if math.isfinite(s) else f'  {rank}. {c:<{width}}  nan')
    return '\n'.join(lines)


def run_infer(checkpoint: str,
              images: str,
              topk: int = 5,
              backend: str = 'auto',
              threads: Optional[int] = None,
              img_size=None,
              batch_size: int = 8,
              trusted: bool = False,
              log: Callable[[str], None] = print,
              compare: bool = False,
              repeats: int = 20,
              out: Optional[str] = None):
    """``tools/infer.py``: load the runtime of ``checkpoint`` (packed or exported), classify the image file
    or the images of the folder ``images``, print the top-k of each with ``log``; returns the predictions.
    ``compare``: also time the runtime against the float deployed model on the first ``batch_size`` images
    (:func:`compare_with_float`, ``repeats`` calls each) and return that comparison; ``out``: write the
    predictions (and the comparison) to this JSON file (atomically)."""
    from .runtime import load_packed, load_runtime
    paths = list_images(images)
    packed = load_packed(checkpoint, trusted)  # read (and pack) once: the runtime and --compare-float use it
    runtime = load_runtime(packed, backend=backend, threads=threads)
    preprocess = Preprocess(runtime.meta, img_size)
    results = classify(runtime, paths, preprocess, topk, batch_size)
    counts: Dict[str, int] = {}
    for b in runtime.backends().values():
        counts[b] = counts.get(b, 0) + 1
    log(f'# {os.path.basename(checkpoint)}: {runtime.arch.to_text()} | input {preprocess.mode} | binary convs: ' +
        ', '.join(f'{n} {b}'
                  for b, n in counts.items()) + f' | {torch.get_num_threads() if threads is None else threads}'
        ' thread(s)')
    log(format_predictions(results))
    if compare:
        images_t = torch.stack([preprocess(p) for p in paths[:batch_size]])
        cmp = compare_with_float(runtime, packed, images_t, repeats=repeats)
        verdict = 'equal' if cmp['equal'] else f"DIFFER (max abs {cmp['max_abs_diff']:.3g})"
        log(f"# runtime vs float deployed model, batch {cmp['batch']}, {cmp['threads']} thread(s), median of "
            f"{cmp['repeats']}: runtime {cmp['runtime_ms']:.2f} ms, float {cmp['float_ms']:.2f} ms, "
            f"{cmp['speedup']:.2f}x, logits {verdict}")
        if out:
            from ..utils.checkpoint import atomic_write_text
            atomic_write_text(out, json.dumps(dict(comparison=cmp, predictions=results), indent=1))
        return cmp
    if out:
        from ..utils.checkpoint import atomic_write_text
        atomic_write_text(out, json.dumps(dict(predictions=results), indent=1))
    return results


def compare_with_float(runtime, checkpoint, images: torch.Tensor, repeats: int = 20, trusted: bool = False) -> Dict:
    """Run ``images`` through the runtime and through the float deployed model of the same checkpoint (a path
    or the loaded dict; :func:`~nasbnn_mm.deploy.runtime.deployed_classifier`), alternating calls after one
    warm-up each.

    Returns:
        dict: ``equal`` (``torch.equal`` of the logits), ``max_abs_diff``, ``runtime_ms`` / ``float_ms``
        (medians of ``repeats`` calls), ``speedup``, ``batch``, ``threads``, ``repeats``.
    """
    from .runtime import deployed_classifier
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f'repeats: {repeats!r} not allowed (allowed: a positive integer)')
    model, _ = deployed_classifier(checkpoint, trusted=trusted)
    with torch.inference_mode():
        ref = model(images, mode='tensor')
        got = runtime(images)
        t_rt, t_fl = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            runtime(images)
            t_rt.append(time.perf_counter() - t)
            t = time.perf_counter()
            model(images, mode='tensor')
            t_fl.append(time.perf_counter() - t)
    rt_ms, fl_ms = statistics.median(t_rt) * 1e3, statistics.median(t_fl) * 1e3
    return dict(
        equal=bool(torch.equal(got, ref)),
        max_abs_diff=float((got - ref).abs().max()),
        runtime_ms=rt_ms,
        float_ms=fl_ms,
        speedup=fl_ms / rt_ms,
        batch=int(images.shape[0]),
        threads=torch.get_num_threads(),
        repeats=repeats)
