"""report.json and report.md: the evaluators' numbers and pictures in one place."""

import json
import math
from collections.abc import Mapping, Sequence

from etils import epath

from i2i_jax import storage

SECTION_TITLES = {
    "fid": "Realism: distance to the real domain",
    "domain_gap": "Domain gap: X, Y and F(X) in one feature space",
    "semantic": "Semantic consistency: seg(F(X)) against X's labels",
    "flips": "Semantic flipping",
    "detail": "Small-detail retention",
    "downstream": "Downstream gain: segmenter trained on F(X) vs on X, tested on Y",
}

# What the numbers of a section mean, printed under its title in report.md.
SECTION_EXPLANATIONS = {
    "flips": (
        "flip/a->b is the fraction of class a's pixels in X that the segmenter calls b in F(X) "
        "(flip_rate: of all pixels). Part of it is the segmenter's own error on real-looking "
        "images. With an ideal translation (--ideal: the real-style render of the same scenes), "
        "ideal/flip_rate is that error and excess_flip/a->b = flip/a->b of F(X) minus flip/a->b "
        "of the ideal is what the translation itself adds: about 0 for a translation as good as "
        "the ideal, positive where it repaints a as b."),
    "detail": (
        "One row per instance of a small class (pole, traffic light, traffic sign) annotated in "
        "X (instances/*.json, else connected components of X's classes). retention: share of "
        "checkable instances that still stand out from their surroundings in F(X) as in X "
        "(contrast >= 0.5, no segmenter needed); retention_seg: share whose pixels the "
        "segmenter still calls their class in F(X) (>= half of them); light_state_accuracy: "
        "share of checkable traffic lights whose brightest lamp in F(X) has the hue of the "
        "annotated state. ideal/...: the same for the ideal translation, the top a "
        "translation can reach with this segmenter."),
}


def _format(value: float) -> str:
  return "n/a" if math.isnan(value) else f"{value:.4g}"


def render_markdown(sections: Mapping[str, Mapping[str, float]],
                    pictures: Mapping[str, Mapping[str, str]], notes: Sequence[str]) -> str:
  """The markdown report: one table per section, then its pictures, each under its caption."""
  lines = ["# Translation evaluation", ""]
  lines += [f"- {note}" for note in notes]
  for section, metrics in sections.items():
    lines += ["", f"## {SECTION_TITLES.get(section, section)}", ""]
    if section in SECTION_EXPLANATIONS:
      lines += [SECTION_EXPLANATIONS[section], ""]
    lines += ["| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {_format(value)} |" for name, value in metrics.items()]
    for picture, caption in pictures.get(section, {}).items():
      lines += ["", f"*{picture}*: {caption}", "", f"![{picture}]({picture})"]
  return "\n".join(lines) + "\n"


def write_report(out_dir: epath.PathLike, sections: Mapping[str, Mapping[str, float]],
                 pictures: Mapping[str, Mapping[str, str]], notes: Sequence[str],
                 inputs: Mapping[str, str]) -> dict:
  """Writes `out_dir/report.json` and `out_dir/report.md` (`storage.atomic_write`).

  Args:
    out_dir: the report folder, any epath (gs:// too); pictures are paths
      relative to it.
    sections: section name -> {metric name: value}; NaN is written as null.
    pictures: section name -> {picture file name: caption saying what it shows}.
    notes: lines that qualify the numbers (which feature network, which segmenter).
    inputs: what was evaluated (flag name -> value).

  Returns:
    The report as written to report.json.
  """
  out_dir = epath.Path(out_dir)
  report = {
      "inputs": dict(inputs),
      "notes": list(notes),
      "metrics": {section: {name: None if math.isnan(value) else float(value)
                            for name, value in metrics.items()}
                  for section, metrics in sections.items()},
      "pictures": {section: list(names) for section, names in pictures.items() if names},
      "captions": {name: caption for names in pictures.values()
                   for name, caption in names.items()},
  }
  with storage.atomic_write(out_dir / "report.json", "w") as f:
    f.write(json.dumps(report, indent=2) + "\n")
  with storage.atomic_write(out_dir / "report.md", "w") as f:
    f.write(render_markdown(sections, pictures, notes))
  return report
