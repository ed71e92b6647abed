"""Every module of the package imports (the fast subset, ``-m "not slow"``, reaches each one)."""
import importlib
import pkgutil

import pytest

import surf_dist

MODULES = sorted(m.name for m in pkgutil.walk_packages(surf_dist.__path__, "surf_dist."))


def test_the_walk_sees_every_layer():
    assert {m.split(".")[1] for m in MODULES} == {"cli", "commands", "runtime", "core", "methods", "problem",
                                                  "comm", "io"}


@pytest.mark.parametrize("module", MODULES)
def test_module_imports(module):
    importlib.import_module(module)
