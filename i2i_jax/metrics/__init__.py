"""Evaluators of a translation X -> F(X) against the real domain Y.

Each is a small class built once with the fixed data (X, Y, labels) and a
`run(translated_images) -> dict[str, float]` that can be called from the
`i2i_jax.evaluate` CLI, from training (periodic eval into TensorBoard) or from code:

  fid.FidKidEvaluator                   FID / KID (or FD_/KD_<network> offline)
  domain_gap.DomainGapEvaluator         FD(X,Y) vs FD(F(X),Y) + scatter PNG
  semantic.SemanticConsistencyEvaluator mIoU, pixel accuracy, per-class IoU
  flips.FlipEvaluator                   flip matrix, flip rates, worst-image overlays
  detail.DetailRetentionEvaluator       thin-class instance retention, HF energy ratio
  downstream.DownstreamGainEvaluator    segmenter on F(X) vs on X, tested on Y
"""
