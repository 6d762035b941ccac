"""Network architectures only (the TSM-named MobileNetV2); no imports from ``ops``.

The backbone factory (``--arch`` / ``--pretrain``) is :mod:`ops.backbones`."""
