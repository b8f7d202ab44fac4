"""The worked example of cloakbench's docs/EXTENDING.md: one file per kind.

* :mod:`cloakbench_example.blur_cloak` - ``BlurCloak``, a protection (``cloakbench.protections``: ``blur-cloak``);
* :mod:`cloakbench_example.median` - ``Median``, a purifier (``cloakbench.purifiers``: ``median``);
* :mod:`cloakbench_example.sharpness` - ``Sharpness``, a metric (``cloakbench.metrics``: ``sharpness``).

Each file imports only ``cloakbench`` and ``torch``, so it also works uninstalled, named by its path
(``examples/plugin/cloakbench_example/median.py:Median``).
"""
