from __future__ import annotations

import pytest

from cloakbench.registry import Registry, UnknownNameError


def test_register_create_list_and_suggest():
    reg: Registry[object] = Registry("widget")

    @reg.register("Alpha", paper="x")
    class Alpha:
        def __init__(self, eps=1.0):
            self.eps = eps

    assert reg.names() == ["alpha"] and "ALPHA" in reg and reg.get("alpha").meta == {"paper": "x"}
    assert reg.create("alpha", eps=2.0).eps == 2.0
    with pytest.raises(UnknownNameError, match="Did you mean alpha"):
        reg.create("alpah")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha")(type("Other", (), {}))
