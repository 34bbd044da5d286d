"""The label-guided options of VSAIT (i2i_jax/models/label_guidance.py, docs/label_guided.md).

Each option's mechanism on small arrays, the paper's networks when all are off,
a few sharded bfloat16 steps of each on the 8 fake CPU devices of
tests/conftest.py, and one run through the trainer.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i2i_jax import checkpoint
from i2i_jax import losses
from i2i_jax import metric_writer
from i2i_jax import output_tree
from i2i_jax import train
from i2i_jax.families import vsait as vsait_family
from i2i_jax import translator as translator_lib
from i2i_jax import vsa
from i2i_jax.configs import tiny
from i2i_jax.data import sources
from i2i_jax.metrics import segmenter as segmenter_lib
from i2i_jax.models import discriminator, generator, label_guidance, vsait

NUM_CLASSES = 19
# config overrides that switch each option on (the segmenter is needed by all
# but the generator, which gets it for its evaluation-time pseudo-labels).
VARIANTS = {
    "semantic_consistency": {"loss.semantic_coef": 1.0},
    "label_conditioned_generator": {"model.label_conditioned_generator": True},
    "class_conditional_discriminator": {"model.class_conditional_discriminator": True},
    "label_bound_discriminator": {"model.label_bound_discriminator": True},
}


def _config(overrides=(), segmenter="random"):
  """tiny with labels on 8 devices: one 16x16 image per device."""
  config = tiny.get_config()
  config.data.batch_size = 8
  config.data.with_labels = True
  config.data.preprocess = "resize(16,32)|random_crop(16,16)|flip_lr|value_range(-1,1)"
  config.log_images_every = 1000
  config.model.semantic_segmenter = segmenter
  for key, value in dict(overrides).items():
    section, name = key.split(".")
    config[section][name] = value
  return config


def _random_like(key, tree, scale=0.5):
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [scale * jax.random.normal(k, x.shape, x.dtype)
                                      for k, x in zip(keys, leaves)])


# --- semantic consistency -------------------------------------------------------------


def test_semantic_loss_is_minimal_when_the_segmentation_agrees_and_ignores_255():
  labels = jax.random.randint(jax.random.key(0), (2, 8, 8), 0, 5)
  agreeing = 10.0 * jax.nn.one_hot(labels, 5)
  disagreeing = 10.0 * jax.nn.one_hot((labels + 1) % 5, 5)
  assert float(losses.semantic_consistency_loss(agreeing, labels)) < 1e-3
  assert float(losses.semantic_consistency_loss(disagreeing, labels)) > 9.0
  # Ignore pixels do not count: wrong logits there change nothing.
  ignored = labels.at[:, :4].set(255)
  mixed = jnp.where((jnp.arange(8) < 4)[None, :, None, None], disagreeing, agreeing)
  assert float(losses.semantic_consistency_loss(mixed, ignored)) < 1e-3
  assert float(losses.semantic_consistency_loss(mixed, jnp.full_like(labels, 255))) == 0.0


def _init(fns, size=16):
  # Jitted: eager initialisation of all the networks takes ~30 s on 2 cores.
  return jax.jit(lambda key: vsait.init_variables(fns.modules, key, (size, size)))(
      jax.random.key(0))


def test_semantic_term_scores_the_translation_against_the_source_labels():
  """In the G loss: smaller for labels the segmenter reads in G(x) than for others,
  and its gradient reaches the generator; no optimizer holds the segmenter."""
  config = _config(VARIANTS["semantic_consistency"])
  fns = vsait_family.make_step_functions(config)
  variables = _init(fns)
  source = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1, maxval=1)
  loss_and_grads = jax.jit(jax.value_and_grad(vsait_family.generator_loss, has_aux=True),
                           static_argnums=3)
  g_params = vsait_family.generator_params(variables)
  (_, aux), _ = loss_and_grads(g_params, variables, source, fns, jnp.zeros((2, 16, 16), jnp.int32))
  read = label_guidance.pseudo_labels(fns.modules.segmenter, variables["segmenter"],
                                      aux["outputs"]["translated"])
  other = (read + 1) % NUM_CLASSES
  ((total_read, aux_read), _), ((total_other, aux_other), grads) = (
      loss_and_grads(g_params, variables, source, fns, labels) for labels in (read, other))
  assert aux_read["losses"]["semantic"] < aux_other["losses"]["semantic"]
  np.testing.assert_allclose(total_other - total_read, aux_other["losses"]["semantic"]
                             - aux_read["losses"]["semantic"], rtol=1e-3)
  assert float(jnp.abs(grads["generator"]["decoder_out"]["kernel"]).max()) > 0
  assert "segmenter" not in g_params


def test_semantic_loss_without_a_segmenter_names_the_key():
  with pytest.raises(ValueError, match="config.model.semantic_segmenter"):
    vsait_family.make_step_functions(_config(VARIANTS["semantic_consistency"], segmenter=""))


# --- label-bound hypervectors ---------------------------------------------------------


def test_a_class_binding_is_released_by_its_code_and_by_no_other():
  dim = 4096
  codebook = vsa.class_codebook(NUM_CLASSES, dim)
  hypervectors = jax.random.normal(jax.random.key(0), (NUM_CLASSES, dim)) / np.sqrt(dim)
  pure = jnp.eye(NUM_CLASSES)  # cell c is all class c
  bound = vsa.bind(hypervectors, vsa.label_hypervectors(pure, codebook))
  # The cell's own code releases it exactly ...
  np.testing.assert_allclose(vsa.unbind(bound, codebook), hypervectors, rtol=0, atol=1e-7)
  # ... another class's leaves it unrecognisable (cosines ~ N(0, 1/D)).
  wrong = vsa.unbind(bound, jnp.roll(codebook, 1, axis=0))
  assert float(jnp.max(jnp.abs(vsa.similarity(wrong, hypervectors)))) < 0.1


def test_mixed_cells_give_back_their_class_fractions_by_unbinding():
  dim = 4096
  codebook = vsa.class_codebook(NUM_CLASSES, dim)
  labels = jnp.asarray(np.random.RandomState(0).choice(
      [0, 2, 8, 10, 255], size=(2, 32, 64), p=[0.4, 0.2, 0.2, 0.1, 0.1]))
  fractions = label_guidance.class_fractions(labels, NUM_CLASSES, (2, 4))
  hypervectors = jax.random.normal(jax.random.key(0), (2, 2, 4, dim)) / np.sqrt(dim)
  bound = vsa.bind(hypervectors, vsa.label_hypervectors(fractions, codebook))
  # Unbinding the hypervector gives the class hypervector, whose projection on the
  # codebook is each class's fraction up to the codes' crosstalk (~1/sqrt(D)).
  recovered = (bound / hypervectors) @ codebook.T / dim
  np.testing.assert_allclose(recovered, fractions, rtol=0, atol=4 / np.sqrt(dim))
  assert float(fractions[..., 0].mean()) == pytest.approx(0.4, abs=0.05)
  np.testing.assert_allclose(fractions.sum(-1), 1 - (labels == 255).reshape(
      2, 2, 16, 4, 16).mean(axis=(2, 4)), atol=1e-6)


def test_the_bound_discriminator_sees_the_classes_of_its_cells():
  config = _config(VARIANTS["label_bound_discriminator"])
  fns = vsait_family.make_step_functions(config)
  hypervectors = jax.random.normal(jax.random.key(0), (1, 2, 2, 64)) / 8
  d_variables = fns.modules.discriminator.init(jax.random.key(1), hypervectors)
  sky, road = (jax.nn.one_hot(jnp.full((1, 2, 2), c), NUM_CLASSES) for c in (10, 0))
  as_sky = vsait_family.discriminate(d_variables, hypervectors, sky, fns)
  assert not np.allclose(as_sky, vsait_family.discriminate(d_variables, hypervectors, road, fns))
  # Unbound (no labelled pixel) it is the paper's discriminator.
  np.testing.assert_allclose(
      vsait_family.discriminate(d_variables, hypervectors, jnp.zeros_like(sky), fns),
      fns.modules.discriminator.apply(d_variables, hypervectors), rtol=1e-6)


# --- label-conditioned generator ------------------------------------------------------


def test_the_label_conditioned_decoder_follows_the_label_map():
  net = generator.ResNetGenerator(res_channels=4, res_blocks=2, label_classes=NUM_CLASSES)
  images = jax.random.uniform(jax.random.key(0), (1, 32, 32, 3), minval=-1, maxval=1)
  labels = jnp.zeros((1, 32, 32), jnp.int32)
  variables = net.init(jax.random.key(1), images, labels)
  # Fresh, the modulation is the identity (gamma and beta start at zero) ...
  changed = labels.at[:, 8:16, 8:16].set(6)  # a traffic light on the road
  apply = jax.jit(net.apply)
  np.testing.assert_array_equal(apply(variables, images, labels),
                                apply(variables, images, changed))
  # ... once trained (random weights here) the class region shows in the output,
  # and mostly where it changed.
  spade = {name: _random_like(jax.random.key(2), params) if name.startswith("decoder_up")
           else params for name, params in variables["params"].items()}
  trained = {**variables, "params": spade}
  before, again, after = (apply(trained, images, y) for y in (labels, labels, changed))
  np.testing.assert_array_equal(before, again)
  difference = jnp.abs(after - before).mean(axis=(0, 3))
  assert float(difference[8:16, 8:16].mean()) > 1e-3
  assert float(difference[8:16, 8:16].mean()) > 5 * float(difference[24:, 24:].mean())


def test_the_label_conditioned_generator_needs_labels():
  net = generator.ResNetGenerator(res_channels=4, res_blocks=2, label_classes=NUM_CLASSES)
  with pytest.raises(ValueError, match="config.model.label_conditioned_generator"):
    net.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


# --- class-aware (projection) discriminator --------------------------------------------


def test_the_projection_discriminator_depends_on_the_class_map():
  channels = (32, 16, 1)
  projection = discriminator.ClassProjectionDiscriminator(channels, NUM_CLASSES)
  plain = discriminator.HypervectorDiscriminator(channels)
  hypervectors = jax.random.normal(jax.random.key(0), (2, 3, 3, 64)) / 8
  sky, road = (jax.nn.one_hot(jnp.full((2, 3, 3), c), NUM_CLASSES) for c in (10, 0))
  variables = projection.init(jax.random.key(1), hypervectors, sky)
  # Fresh (zero class embedding) it is the plain discriminator with the same weights.
  plain_variables = {"params": {k: v for k, v in variables["params"].items()
                                if k != "class_embedding"}}
  np.testing.assert_allclose(projection.apply(variables, hypervectors, sky),
                             plain.apply(plain_variables, hypervectors), rtol=1e-6)
  embedded = {"params": {**variables["params"], "class_embedding": _random_like(
      jax.random.key(2), variables["params"]["class_embedding"])}}
  as_sky, as_road = (projection.apply(embedded, hypervectors, c) for c in (sky, road))
  assert float(jnp.abs(as_sky - as_road).min()) > 1e-4
  # A half-sky cell lies between (the logit is linear in the class fractions).
  half = projection.apply(embedded, hypervectors, (sky + road) / 2)
  np.testing.assert_allclose(half, (as_sky + as_road) / 2, rtol=1e-4, atol=1e-6)


def test_target_classes_come_from_the_target_labels_else_the_segmenters_pseudo_labels():
  config = _config(VARIANTS["class_conditional_discriminator"])
  fns = vsait_family.make_step_functions(config)
  variables = _init(fns)
  source, target = jax.random.uniform(jax.random.key(1), (2, 2, 16, 16, 3), minval=-1)
  labels = jnp.full((2, 16, 16), 3)
  hv_source = jax.jit(fns.modules.hypervectors)(variables, source)
  inputs = jax.jit(vsait_family.discriminator_inputs, static_argnums=4)(
      variables, source, target, hv_source, fns, labels)
  np.testing.assert_allclose(inputs["source_classes"][..., 3], 1.0)
  expected = label_guidance.class_fractions(
      label_guidance.pseudo_labels(fns.modules.segmenter, variables["segmenter"], target),
      NUM_CLASSES, inputs["hv_target"].shape[1:3])
  np.testing.assert_allclose(inputs["target_classes"], expected)
  # config.data.with_target_labels: the target's own labels replace the pseudo-labels.
  given = jax.jit(vsait_family.discriminator_inputs, static_argnums=4)(
      variables, source, target, hv_source, fns, labels, jnp.full((2, 16, 16), 5))
  np.testing.assert_allclose(given["target_classes"][..., 5], 1.0)
  assert np.abs(np.asarray(given["target_classes"]) - np.asarray(expected)).max() > 0.5


def test_target_labels_are_a_config_error_without_a_class_conditioned_discriminator():
  config = _config(VARIANTS["semantic_consistency"])
  config.data.with_target_labels = True
  with pytest.raises(ValueError, match=r"config.data.with_target_labels is read only by"):
    vsait_family.make_step_functions(config)
  # With them, the class-conditioned discriminators need no segmenter.
  config = _config(VARIANTS["label_bound_discriminator"], segmenter="")
  config.data.with_target_labels = True
  fns = vsait_family.make_step_functions(config)
  assert fns.modules.segmenter is None
  assert vsait_family.batch_keys(fns) == ("source", "target", "source_label", "target_label")


# --- all off: the paper ---------------------------------------------------------------


def test_all_options_off_build_the_papers_networks():
  config = tiny.get_config()
  fns = vsait_family.make_step_functions(config)
  assert not fns.needs_source_labels and fns.modules.segmenter is None
  shapes = jax.eval_shape(lambda: vsait.init_variables(fns.modules, jax.random.key(0), (32, 32)))
  assert set(shapes) == {"generator", "vgg", "lsh", "map_net", "discriminator"}
  # A config saved before the options existed builds the same networks.
  old_model = {k: v for k, v in config.model.to_dict().items()
               if k not in ("label_classes", "semantic_segmenter", "label_conditioned_generator",
                            "class_conditional_discriminator", "label_bound_discriminator")}
  import ml_collections  # pylint: disable=g-import-not-at-top
  old_modules = vsait.build_modules(ml_collections.ConfigDict(old_model))
  old_shapes = jax.eval_shape(lambda: vsait.init_variables(old_modules, jax.random.key(0),
                                                           (32, 32)))
  assert jax.tree.structure(old_shapes) == jax.tree.structure(shapes)
  assert jax.tree.map(lambda x: x.shape, old_shapes) == jax.tree.map(lambda x: x.shape, shapes)
  # ... and its checkpoints resume under the new default config.
  old_config = json.loads(json.dumps({**config.to_dict(), "model": old_model}))
  checkpoint.check_same_model(old_config, config, "old run")


# --- through the trainer --------------------------------------------------------------


def test_every_option_trains_sharded_in_bfloat16_through_the_trainer(tmp_path):
  """All four options at once, 8 devices, bfloat16, a segmenter folder as
  train_segmenter writes it: finite losses (the trainer stops on any other),
  each option's loss or parameters present, the segmenter unchanged."""
  model = segmenter_lib.SmallUNet(NUM_CLASSES)
  params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
  segmenter_lib.FlaxSegmenter(NUM_CLASSES, params).save(tmp_path / "segmenter")
  overrides = {k: v for variant in VARIANTS.values() for k, v in variant.items()}
  config = _config(overrides, segmenter=str(tmp_path / "segmenter"))
  config.compute_dtype = "bfloat16"
  config.total_steps = 2
  config.log_images_every = 2
  config.data.with_labels = False
  with pytest.raises(train.ConfigError, match=r"--config.data.with_labels=True"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
  config.data.with_labels = True
  state = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert jax.device_count() == 8
  records = metric_writer.read_metrics(tmp_path / "run" / metric_writer.METRICS_FILE)
  losses_logged = [r for r in records if "g_total" in r]
  assert [r["step"] for r in losses_logged] == [1, 2]
  assert all(np.isfinite(r["g_semantic"]) and np.isfinite(r["d_total"]) for r in losses_logged)
  g_tree = str(jax.tree.structure(vsait_family.generator_params(state.variables)))
  d_tree = str(jax.tree.structure(vsait_family.discriminator_params(state.variables)))
  assert "spade" in g_tree and "class_embedding" in d_tree
  assert state.variables["generator"]["params"]["decoder_up_0"]["spade"]["gamma"][
      "kernel"].dtype == jnp.float32
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.variables["segmenter"]),
               {"params": jax.device_get(params)})
  assert (tmp_path / "run" / "samples" / "step_00000002.png").exists()
  # Translating a data set: the label-conditioned generator is loaded with its frozen
  # segmenter, which labels what it translates, as training's evaluations do.
  # (In float32: bfloat16 rounding may flip a pseudo-label between two compilations.)
  loaded = checkpoint.load_generator(tmp_path / "run", compute_dtype="float32")
  assert isinstance(loaded.module, label_guidance.PseudoLabelledGenerator)
  images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), np.uint8)
  translator = translator_lib.Translator(loaded, batch_size=8, bucket_multiple=32)  # no padding
  translated = translator.translate(images)
  config.compute_dtype = "float32"
  fns = vsait_family.make_step_functions(config)
  expected = vsait_family.translate(jax.device_get(state.variables),
                                images.astype(np.float32) / 127.5 - 1.0, fns)
  expected = np.clip(np.round((np.asarray(expected, np.float32) + 1) * 127.5), 0, 255)
  assert np.abs(translated.astype(int) - expected).max() <= 1
  # Given the images' own labels (what it trained with), the generator uses them instead
  # (its SPADE convs made random here: after two steps they barely differ from zero).
  randomised = jax.tree_util.tree_map_with_path(
      lambda path, x: (0.5 * jax.random.normal(jax.random.key(len(path)), x.shape, x.dtype)
                       if "spade" in jax.tree_util.keystr(path) else x), loaded.variables)
  loaded = dataclasses.replace(loaded, variables=randomised)
  translator = translator_lib.Translator(loaded, batch_size=8, bucket_multiple=32)
  labels = np.zeros((8, 32, 32), np.uint8)
  labels[:, :, 16:] = 10
  with_labels = translator.translate(images, labels)
  expected = jax.jit(loaded.module.apply)(loaded.variables,
                                          images.astype(np.float32) / 127.5 - 1.0, labels)
  expected = np.clip(np.round((np.asarray(expected) + 1) * 127.5), 0, 255)
  assert np.abs(with_labels.astype(int) - expected).max() <= 1
  assert np.abs(with_labels.astype(int) - translator.translate(images).astype(int)).mean() > 1
  # ... and so does the data-set path: a folder source with --labels, its manifest says so.
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for name, image, label in zip("abcd", images, labels):
    for folder, array in (("images", image), ("labels", label)):
      (tmp_path / "data" / folder).mkdir(parents=True, exist_ok=True)
      Image.fromarray(array).save(tmp_path / "data" / folder / f"{name}.png")
  source = sources.open_source(f"folder:{tmp_path / 'data' / 'images'}",
                               labels=str(tmp_path / "data" / "labels"))
  summary = translator_lib.translate_dataset(translator, source, tmp_path / "out",
                                             progress=False)
  assert summary.status == "complete"
  for index, name in enumerate("abcd"):
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "images" /
                                                        f"{name}.png")), with_labels[index])
  manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
  assert manifest["generator_labels"] == "source"
  with pytest.raises(output_tree.OutputConflictError,
                     match="generator_labels: source there, segmenter now"):
    translator_lib.translate_dataset(translator, source, tmp_path / "out", source_labels=False,
                                     progress=False)
