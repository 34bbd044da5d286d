"""report.json and report.md: the evaluators' numbers and pictures in one place."""

import json
import math
import os
from collections.abc import Mapping, Sequence

SECTION_TITLES = {
    "fid": "Realism: distance to the real domain",
    "domain_gap": "Domain gap: X, Y and F(X) in one feature space",
    "semantic": "Semantic consistency: seg(F(X)) against X's labels",
    "flips": "Semantic flipping",
    "detail": "Small-detail retention",
    "downstream": "Downstream gain: segmenter trained on F(X) vs on X, tested on Y",
}


def _write_atomically(path: str, text: str) -> None:
  tmp_path = f"{path}.tmp-{os.getpid()}"
  with open(tmp_path, "w") as f:
    f.write(text)
  os.replace(tmp_path, path)


def _format(value: float) -> str:
  return "n/a" if math.isnan(value) else f"{value:.4g}"


def render_markdown(sections: Mapping[str, Mapping[str, float]],
                    pictures: Mapping[str, Mapping[str, str]], notes: Sequence[str]) -> str:
  """The markdown report: one table per section, then its pictures, each under its caption."""
  lines = ["# Translation evaluation", ""]
  lines += [f"- {note}" for note in notes]
  for section, metrics in sections.items():
    lines += ["", f"## {SECTION_TITLES.get(section, section)}", "", "| metric | value |",
              "| --- | --- |"]
    lines += [f"| {name} | {_format(value)} |" for name, value in metrics.items()]
    for picture, caption in pictures.get(section, {}).items():
      lines += ["", f"*{picture}*: {caption}", "", f"![{picture}]({picture})"]
  return "\n".join(lines) + "\n"


def write_report(out_dir: str, sections: Mapping[str, Mapping[str, float]],
                 pictures: Mapping[str, Mapping[str, str]], notes: Sequence[str],
                 inputs: Mapping[str, str]) -> dict:
  """Writes `out_dir/report.json` and `out_dir/report.md` (temp file + rename).

  Args:
    out_dir: the report folder; pictures are paths relative to it.
    sections: section name -> {metric name: value}; NaN is written as null.
    pictures: section name -> {picture file name: caption saying what it shows}.
    notes: lines that qualify the numbers (which feature network, which segmenter).
    inputs: what was evaluated (flag name -> value).

  Returns:
    The report as written to report.json.
  """
  os.makedirs(out_dir, exist_ok=True)
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
  _write_atomically(os.path.join(out_dir, "report.json"), json.dumps(report, indent=2) + "\n")
  _write_atomically(os.path.join(out_dir, "report.md"), render_markdown(sections, pictures, notes))
  return report
