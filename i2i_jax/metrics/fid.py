"""Frechet distance (FID) and kernel distance (KID) of feature sets, and their evaluator.

The arithmetic follows torch-fidelity: float64 statistics on the host, the
trace of sqrt(S1 S2) from the eigenvalues of S1 S2, and KID as the unbiased
MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 averaged over
random subsets drawn with `np.random.RandomState(seed)`.
"""

from collections.abc import Callable, Sequence

import numpy as np

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_SEED = 2020  # torch-fidelity's default rng_seed.


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean [D] and covariance [D, D] (float64) of features [N, D]."""
  features = np.asarray(features, dtype=np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(f"Need features [N >= 2, D]; found shape {features.shape}.")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance_from_statistics(mu1, sigma1, mu2, sigma2) -> float:
  """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))."""
  diff = mu1 - mu2
  # The eigenvalues of S1 S2 are those of the PSD sqrt(S1) S2 sqrt(S1): their
  # square roots sum to Tr(sqrt(S1 S2)) without an unstable matrix sqrt.
  eigenvalues = np.linalg.eigvals(sigma1 @ sigma2).astype(np.complex128)
  trace_sqrt = np.sum(np.sqrt(eigenvalues).real)
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def frechet_distance(features1: np.ndarray, features2: np.ndarray) -> float:
  """Frechet distance of two feature sets [N1, D] and [N2, D]."""
  return frechet_distance_from_statistics(*feature_statistics(features1),
                                          *feature_statistics(features2))


def _polynomial_mmd2(x: np.ndarray, y: np.ndarray, degree: int, gamma: float,
                     coef0: float) -> float:
  """Unbiased MMD^2 of two equal-size samples [m, D] under a polynomial kernel."""
  m = len(x)
  k_xx = (x @ x.T * gamma + coef0) ** degree
  k_yy = (y @ y.T * gamma + coef0) ** degree
  k_xy = (x @ y.T * gamma + coef0) ** degree
  within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
  return float(within - 2.0 * k_xy.sum() / (m * m))


def kernel_distance(features1: np.ndarray, features2: np.ndarray, *,
                    subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
                    degree: int = 3, gamma: float | None = None, coef0: float = 1.0,
                    seed: int = KID_SEED) -> tuple[float, float]:
  """KID: mean and std over `subsets` random subsets of the unbiased MMD^2.

  Args:
    features1: [N1, D] features.
    features2: [N2, D] features.
    subsets: number of random subsets.
    subset_size: samples per subset; at most min(N1, N2) (the caller may pass
      min(N1, N2, KID_SUBSET_SIZE) for small sets, and should report it).
    degree, gamma, coef0: polynomial kernel (x.y * gamma + coef0)^degree;
      gamma defaults to 1 / D.
    seed: seeds the subset sampling.

  Returns:
    (mean, std) of the subset MMD^2 values.
  """
  features1 = np.asarray(features1, dtype=np.float64)
  features2 = np.asarray(features2, dtype=np.float64)
  if min(len(features1), len(features2)) < subset_size or subset_size < 2:
    raise ValueError(
        f"KID subset size {subset_size} must be >= 2 and at most the number of samples "
        f"({len(features1)} and {len(features2)}).")
  gamma = 1.0 / features1.shape[1] if gamma is None else gamma
  rng = np.random.RandomState(seed)
  mmds = np.zeros(subsets)
  for i in range(subsets):
    x = features1[rng.choice(len(features1), subset_size, replace=False)]
    y = features2[rng.choice(len(features2), subset_size, replace=False)]
    mmds[i] = _polynomial_mmd2(x, y, degree, gamma, coef0)
  return float(mmds.mean()), float(mmds.std())


class FidKidEvaluator:
  """FID and KID of translated images against the target (real) domain.

  The target features are computed once, so the evaluator can run every few
  thousand training steps. Keys are prefixed with the feature network's name
  ("FID" for the standard Inception weights, "FD_inception_random_init" ...).
  """

  def __init__(self, extract_features: Callable[[Sequence[np.ndarray]], np.ndarray],
               target_images: Sequence[np.ndarray], name: str,
               kid_subsets: int = KID_SUBSETS, kid_subset_size: int = KID_SUBSET_SIZE):
    """Args:
      extract_features: images (sequence of [H, W, 3] uint8) -> [N, D] features.
      target_images: the real domain Y, a sequence of [H, W, 3] uint8.
      name: label of the distance, e.g. `InceptionFeatures.name`.
      kid_subsets, kid_subset_size: KID protocol; the subset size shrinks to
        the smaller set's size when the sets are small (reported as `kid_subset_size`).
    """
    self.extract_features = extract_features
    self.target_features = extract_features(target_images)
    self.name = name
    self.kid_subsets = kid_subsets
    self.kid_subset_size = kid_subset_size

  def run(self, translated_images: Sequence[np.ndarray]) -> dict[str, float]:
    """Returns {"FID", "KID_mean", "KID_std", "KID_mean_x1e3", "KID_std_x1e3", "kid_subset_size"}.

    "KID_*_x1e3" are KID x 10^3, the scale papers print KID at. With another
    feature network the names follow it: "FD_inception_random_init",
    "KD_inception_random_init_mean", "KD_inception_random_init_mean_x1e3", ...
    """
    features = self.extract_features(translated_images)
    subset_size = min(self.kid_subset_size, len(features), len(self.target_features))
    kid_mean, kid_std = kernel_distance(features, self.target_features,
                                        subsets=self.kid_subsets, subset_size=subset_size)
    kid_name = {"FID": "KID"}.get(self.name, "K" + self.name.removeprefix("F"))
    return {
        self.name: frechet_distance(features, self.target_features),
        f"{kid_name}_mean": kid_mean,
        f"{kid_name}_std": kid_std,
        f"{kid_name}_mean_x1e3": 1e3 * kid_mean,
        f"{kid_name}_std_x1e3": 1e3 * kid_std,
        "kid_subset_size": float(subset_size),
    }
