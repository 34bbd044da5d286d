"""The domain-gap picture: X, Y and F(X) in one feature space, projected to 2-D."""

import importlib.util
from collections.abc import Callable, Sequence

from etils import epath
import numpy as np

from i2i_jax import storage
from i2i_jax.metrics import fid

MAX_POINTS_PER_SET = 1000
# What the axes of each projection measure: PCA keeps the features' units,
# t-SNE and UMAP coordinates have no meaning of their own.
_AXIS_UNITS = {"PCA": " (feature units)", "t-SNE": " (no units)", "UMAP": " (no units)"}


def pca_2d(features: np.ndarray) -> np.ndarray:
  """[N, D] -> [N, 2]: projection on the two leading principal components."""
  centred = features - features.mean(axis=0)
  _, _, components = np.linalg.svd(centred, full_matrices=False)
  return centred @ components[:2].T


def projections(features: np.ndarray, seed: int) -> dict[str, np.ndarray]:
  """PCA always; t-SNE (scikit-learn) and UMAP (umap-learn) when installed."""
  result = {"PCA": pca_2d(features)}
  if importlib.util.find_spec("sklearn") is not None and len(features) > 5:
    from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
    result["t-SNE"] = TSNE(2, perplexity=min(30.0, (len(features) - 1) / 3),
                           random_state=seed).fit_transform(features)
  if importlib.util.find_spec("umap") is not None and len(features) > 5:
    import umap  # pylint: disable=g-import-not-at-top
    result["UMAP"] = umap.UMAP(n_components=2, random_state=seed).fit_transform(features)
  return result


class DomainGapEvaluator:
  """Frechet distances X->Y and F(X)->Y, and a scatter of the three feature clouds.

  `run` writes `domain_gap.png` (one panel per projection, titled, with axis
  labels and a legend) into `out_dir` when given; `self.pictures` maps its name
  to a caption for the report afterwards.
  """

  def __init__(self, extract_features: Callable[[Sequence[np.ndarray]], np.ndarray],
               source_images: Sequence[np.ndarray], target_images: Sequence[np.ndarray],
               name: str, out_dir: epath.PathLike | None = None, seed: int = 0):
    """Args:
      extract_features: images (sequence of [H, W, 3] uint8) -> [N, D] features.
      source_images: X; target_images: Y (sequences of [H, W, 3] uint8).
      name: label of the distance ("FID" only for the standard Inception).
      out_dir: where the picture goes (any epath, gs:// too); None writes none.
      seed: seeds subsampling and the stochastic projections.
    """
    self.extract_features = extract_features
    self.source_features = extract_features(source_images)
    self.target_features = extract_features(target_images)
    self.name = name
    self.out_dir = epath.Path(out_dir) if out_dir else None
    self.seed = seed
    self.pictures: dict[str, str] = {}

  def run(self, translated_images: Sequence[np.ndarray]) -> dict[str, float]:
    """Returns {"<name>(X,Y)", "<name>(F(X),Y)", "<name>_gap_closed"}.

    The last is 1 - FD(F(X),Y) / FD(X,Y): the fraction of the gap closed.
    """
    translated_features = self.extract_features(translated_images)
    before = fid.frechet_distance(self.source_features, self.target_features)
    after = fid.frechet_distance(translated_features, self.target_features)
    metrics = {f"{self.name}(X,Y)": before, f"{self.name}(F(X),Y)": after,
               f"{self.name}_gap_closed": 1.0 - after / before if before > 0 else 0.0}
    if self.out_dir:
      self._write_scatter(translated_features, before, after)
    return metrics

  def scatter_figure(self, translated_features: np.ndarray, before: float, after: float):
    """The scatter of X, Y and F(X) features, one panel per projection.

    Args:
      translated_features: [N, D] features of F(X).
      before, after: FD(X,Y) and FD(F(X),Y), quoted in the title.

    Returns:
      (a matplotlib Figure, made without pyplot so that the caller's backend, a
      notebook's inline one, is left alone; the names of its projections).
    """
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

    rng = np.random.RandomState(self.seed)
    clouds = {"X: source (sim)": self.source_features, "Y: target (real)": self.target_features,
              "F(X): translated": translated_features}
    clouds = {label: features[np.sort(rng.permutation(len(features))[:MAX_POINTS_PER_SET])]
              for label, features in clouds.items()}
    stacked = np.concatenate(list(clouds.values())).astype(np.float64)
    bounds = np.cumsum([0] + [len(features) for features in clouds.values()])
    panels = projections(stacked, self.seed)
    figure = Figure(figsize=(max(8, 6 * len(panels)), 5.6))
    axes = figure.subplots(1, len(panels), squeeze=False)
    figure.suptitle(f"Domain gap: one dot per image, {self.name} features projected to 2-D\n"
                    f"{self._distances(before, after)}\nthe translation works when orange F(X) "
                    "moves from blue X onto green Y", fontsize=10)
    for axis, (method, points) in zip(axes[0], panels.items()):
      for (label, _), start, stop, color in zip(clouds.items(), bounds[:-1], bounds[1:],
                                                ("tab:blue", "tab:green", "tab:orange")):
        axis.scatter(points[start:stop, 0], points[start:stop, 1], s=8, alpha=0.6,
                     color=color, label=label)
      axis.set_title(f"{method} of {self.name} features", fontsize=10)
      axis.set_xlabel(f"{method} 1" + _AXIS_UNITS[method])
      axis.set_ylabel(f"{method} 2" + _AXIS_UNITS[method])
      axis.legend(fontsize=8)
    figure.tight_layout()
    return figure, list(panels)

  def _distances(self, before: float, after: float) -> str:
    return f"{self.name}(X,Y) = {before:.4g}, {self.name}(F(X),Y) = {after:.4g}"

  def _write_scatter(self, translated_features, before: float, after: float):
    figure, methods = self.scatter_figure(translated_features, before, after)
    with storage.atomic_write(self.out_dir / "domain_gap.png") as f:
      figure.savefig(f, format="png", dpi=100)
    self.pictures = {"domain_gap.png": (
        f"Domain gap: every dot is one image's {self.name} features, projected to 2-D by "
        f"{', '.join(methods)} (one panel each); blue = X (source), green = Y (target), orange = "
        "F(X) (translated). The closer the orange cloud lies to the green one (and the farther "
        f"from the blue one), the more the translation closed the gap; "
        f"{self._distances(before, after)}.")}
