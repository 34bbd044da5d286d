"""Input data: sources named in the config, preprocessing ops, grain pipelines.

  sources.py      open_source("folder:PATH" | "tfds:NAME[:SPLIT]" | "toy_streets:STYLE[:SPLIT]"
                              | "prepared:DIR")
  preprocess.py   "resize(256,512)|random_crop(256,256)|flip_lr|value_range(-1,1)" -> grain transforms
  pipeline.py     make_train_iterator(config.data, seed=...) -> checkpointable grain iterator
  prepared.py     prepared training data (`python -m i2i_jax.prepare`): the leading
                  deterministic ops applied once, stored in ArrayRecord shards
  toy_streets.py  the procedural default data set (no download)
  tfds/           TFDS builders: gta5, cityscapes_fine, image_folder (ArrayRecord)
"""
