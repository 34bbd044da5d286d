"""Evaluators of a translation X -> F(X) against the real domain Y.

Each is a small class built once with the fixed data (X, Y, labels) and a
`run(...) -> dict[str, float]` that can be called from the `i2i_jax.evaluate`
CLI, from training (periodic eval into TensorBoard) or from code. The
segmenter-based ones take class maps, not a segmenter: `segmenter.segment_all`
segments each image set once and they share the predictions.

  fid.FidKidEvaluator                   FID / KID (or FD_/KD_<network> offline)
  domain_gap.DomainGapEvaluator         FD(X,Y) vs FD(F(X),Y) + scatter PNG
  semantic.SemanticConsistencyEvaluator mIoU, pixel accuracy, per-class IoU
  flips.FlipEvaluator                   flip matrix, flip rates (raw, excess over the ideal),
                                        worst-image overlays
  detail.DetailRetentionEvaluator       per-instance retention of poles, lights, signs
                                        (contrast, segmenter), light-state accuracy
  downstream.DownstreamGainEvaluator    segmenter on F(X) vs on X, tested on Y

instances.py reads the instances the detail evaluator checks (annotation
folders, toy_streets scenes, or label components).
"""
