"""NAS-BNN for OpenMMLab (mmpretrain + MMDetection).

``custom_imports=dict(imports=['nasbnn_mm'])`` in an mmpretrain or mmdet config registers
every component under the ``nasbnn`` scope (``type='nasbnn.X'``).
"""
__version__ = '0.1.0'

from . import registry  # noqa: F401,E402
from . import models  # noqa: F401,E402
from . import engine  # noqa: F401,E402
from . import datasets  # noqa: F401,E402
from . import det  # noqa: F401,E402
