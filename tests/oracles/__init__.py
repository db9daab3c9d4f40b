"""The direct official algorithms that the tests (and the benchmarks' "direct" side) compare the fast ones against.

mosaic: DirectMosaicDetection; train_transform: DirectTrainTransform; simota: oracle_assign.
They import yolox; yolox never imports them.
"""
