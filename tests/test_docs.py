"""Every public class and function of the package is documented (STYLE rule 12), and every
command in the CLI table has a module that provides it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import sn40l
from sn40l.cli import COMMANDS

MODULES = sorted(m.name for m in pkgutil.walk_packages(sn40l.__path__, "sn40l."))


@pytest.mark.parametrize("name", MODULES)
def test_public_classes_and_functions_have_docstrings(name):
    module = importlib.import_module(name)
    assert module.__doc__, f"module {name} has no docstring"
    missing = []
    for attr, obj in vars(module).items():
        if attr.startswith("_") or getattr(obj, "__module__", None) != name:
            continue
        if inspect.isclass(obj) and not obj.__doc__:
            missing.append(attr)
    assert not missing, f"{name}: undocumented public classes {missing}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_an_implementation(command):
    module = importlib.import_module(COMMANDS[command][0])
    assert hasattr(module, "register") or hasattr(module, "run_command"), command
