"""Helpers for the test suite and the benchmarks, not the product.

* :mod:`.quick`: shrunk settings of every protection (each expensive part cut to a step or two).
* :mod:`.bare`: the DreamBooth step with nothing around it (the trainer's reference and baseline).
* :mod:`.random_sd`: the full-size Stable Diffusion 2.1-base architecture with random weights.
* :mod:`.shared_data`: where the real test images live (``$CLOAKBENCH_TEST_DATA`` or ``../shared/data``).

Nothing in the product imports this package, except ``cloakbench doctor``'s test-data check
(:mod:`.shared_data`); ``tests/test_architecture.py`` holds that. This ``__init__`` imports nothing, so
importing one helper does not import the others (``random_sd`` needs diffusers and transformers).
"""
