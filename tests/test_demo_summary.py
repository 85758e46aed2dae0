"""tools/demo.py's summary: the table (architecture text escaped for markdown) and the evidence
that the stages learn, parsed from the stage logs the tools write."""
import importlib.util
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SUPERNET_LOG = """\
11/26 16:44:20 - mmengine - INFO - Iter(train) [  20/1500]  base_lr: 2.5e-03 lr: 2.5e-03  eta: 0:06:10  time: 0.25  \
data_time: 0.01  loss_teacher: 2.2900  loss_smallest: 2.1554  loss_random0: 2.1524  loss_random1: 2.1332  loss: 8.7310
11/26 16:49:20 - mmengine - INFO - Iter(train) [1500/1500]  base_lr: 9.6e-09 lr: 9.6e-09  eta: 0:00:00  time: 0.25  \
data_time: 0.01  loss_teacher: 1.7062  loss_smallest: 1.9256  loss_random0: 1.9120  loss_random1: 1.9134  loss: 7.4572
11/26 16:50:03 - mmengine - INFO - [val] subnet largest (0.47M OPs): accuracy/top1: 43.16, accuracy/top5: 90.01 | c16_k3_g1
11/26 16:50:08 - mmengine - INFO - [val] subnet smallest (0.05M OPs): accuracy/top1: 36.83, accuracy/top5: 86.98 | c8_k3_g1
"""
DET_LOG = """\
11/26 16:52:00 - mmengine - INFO - Iter(train) [ 10/300]  lr: 1.9e-04  grad_norm: 7.13  loss: 1.3442  loss_rpn_cls: 0.67
11/26 16:53:40 - mmengine - INFO - Iter(train) [300/300]  lr: 2.7e-08  grad_norm: 3.44  loss: 0.8796  loss_rpn_cls: 0.17
"""


def _demo_module():
    spec = importlib.util.spec_from_file_location('nasbnn_demo', os.path.join(ROOT, 'tools', 'demo.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_summary_table_and_learning_evidence(tmp_path, capsys):
    demo = _demo_module()
    d = demo.Demo(demo.parse_args(['--work-dir', str(tmp_path)]))
    (tmp_path / 'logs' / 'supernet.log').write_text(SUPERNET_LOG)
    (tmp_path / 'logs' / 'detector_train.log').write_text(DET_LOG)
    rows = [
        dict(arch='c8_k3_g1 | c16_k3_g1', ops_m=0.069, search_heldout_top1=36.0, p1_top1=35.81, p2_top1=36.98),
        dict(
            arch='c16_k3_g1 | c24_k3_g1',
            ops_m=0.47,
            search_heldout_top1=38.6,
            p1_top1=43.36,
            p2_top1=45.42,
            det_bbox_mAP=0.002)
    ]
    d.write_summary(rows, {'coco/bbox_mAP': 0.002, 'coco/bbox_mAP_50': 0.01})
    text = (tmp_path / 'summary.md').read_text()
    assert '| `c8_k3_g1 \\| c16_k3_g1` | 0.069 | 36.00 | 35.81 | 36.98 | — |' in text
    assert '| `c16_k3_g1 \\| c24_k3_g1` | 0.470 | 38.60 | 43.36 | 45.42 | 0.002 |' in text
    assert ('summed sandwich loss 8.73 -> 7.46; CIFAR-10 test top-1 of the largest subnet 43.16 %, '
            'smallest 36.83 % (chance 10 %)') in text
    assert 'loss 1.34 -> 0.88; coco_small val bbox mAP 0.002, mAP@50 0.010' in text
    learning = json.loads((tmp_path / 'summary.json').read_text())['learning']
    assert learning['supernet'] == dict(
        loss_first=8.731, loss_last=7.4572, largest_test_top1=43.16, smallest_test_top1=36.83)
    assert learning['detector_train'] == dict(loss_first=1.3442, loss_last=0.8796)


def test_summary_without_logs_has_no_evidence_lines(tmp_path):
    demo = _demo_module()
    d = demo.Demo(demo.parse_args(['--work-dir', str(tmp_path)]))
    evidence, lines = d.learning_evidence({})
    assert evidence == {} and lines == []
