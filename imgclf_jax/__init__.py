"""imgclf_jax: train, evaluate and explain CNN image classifiers with JAX/Flax."""
