"""How the detail, light-state and flip metrics respond to known damage (issue 13).

  python benchmarks/metric_sensitivity.py [--scenes=8] [--height=256 --width=512]

X is sim_detail:val; the ideal translation is the real-style render of the same
scenes (real_mismatch:val, identical to real_detail:val); the other rows are the
ideal translation damaged in one known way (`i2i_jax.metrics.sensitivity`).
Prints one markdown table; the tests assert thresholds on the same numbers.
"""

import argparse

import numpy as np

from i2i_jax.data import toy_streets
from i2i_jax.metrics import detail
from i2i_jax.metrics import flips
from i2i_jax.metrics import sensitivity


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--scenes", type=int, default=8)
  parser.add_argument("--height", type=int, default=256)
  parser.add_argument("--width", type=int, default=512)
  args = parser.parse_args()
  seeds = toy_streets.split_seeds("sim_detail", "val")[:args.scenes]
  rendered = [toy_streets.render_with_instances(seed, "sim_detail", args.height, args.width)
              for seed in seeds]
  sources = [image for image, *_ in rendered]
  labels = [label for _, label, *_ in rendered]
  annotations = [(instance_map, instances) for _, _, instance_map, instances in rendered]
  ideal = [toy_streets.render(seed, "real_mismatch", args.height, args.width)[0]
           for seed in seeds]

  def damaged(degrade):
    return [degrade(image, instance_map, instances)
            for image, (instance_map, instances) in zip(ideal, annotations)]

  cases = {"ideal translation": ideal,
           "small objects erased": damaged(sensitivity.erase_small_objects),
           "blurred (sigma 3 px)": damaged(sensitivity.blur),
           "lamp colours swapped": damaged(sensitivity.swap_light_states),
           "sky repainted as vegetation": sensitivity.repaint_class(
               ideal, labels, painted=toy_streets.SKY, painter=toy_streets.VEGETATION)}
  segment = sensitivity.nearest_colour_segmenter(ideal, labels)
  ideal_predicted = list(segment(np.stack(ideal)))
  detail_evaluator = detail.DetailRetentionEvaluator(sources, annotations)
  flip_evaluator = flips.FlipEvaluator(sources, labels)
  print(f"{args.scenes} sim_detail val scenes at {args.height}x{args.width}; flips by a "
        "nearest-colour segmenter fitted on the ideal translation")
  print("| F(X) | detail retention | contrast | light-state accuracy | excess flip rate "
        "| excess sky->vegetation |")
  print("|---|---:|---:|---:|---:|---:|")
  for name, translated in cases.items():
    details = detail_evaluator.run(translated)
    flipped = flip_evaluator.run(translated, list(segment(np.stack(translated))),
                                 ideal_predicted)
    print(f"| {name} | {details['retention']:.3f} | {details['contrast']:.3f} | "
          f"{details['light_state_accuracy']:.2f} | {flipped['excess_flip_rate']:.3f} | "
          f"{flipped.get('excess_flip/sky->vegetation', 0.0):.3f} |")
  print(f"instances checked: {details['checked']}, lights checked: {details['lights_checked']}")


if __name__ == "__main__":
  main()
