"""The embedded default: the tiny SD of the Shapes world, its evaluator, segmenter training and the demo."""
