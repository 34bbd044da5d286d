from i2i_jax.data.tfds import main

main()
