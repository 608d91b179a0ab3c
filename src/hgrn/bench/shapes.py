"""The shapes `python -m hgrn.bench` times by default; the first of each kind is the main shape, where the PyTorch
reference, the complex HGRN1 scan and the steep-gate path are timed too."""

HGRN2_SHAPES = ["8x2048x16x128", "4x8192x16x128", "1x32768x16x128", "8x2048x32x64", "8x2048x8x256"]  # BxTxHxD
HGRN1_SHAPES = ["8x2048x2048", "4x8192x2048"]  # BxTxD
MAIN_HGRN2, MAIN_HGRN1 = HGRN2_SHAPES[0], HGRN1_SHAPES[0]
