"""Package attributes imported on first use (`svae`, `svae.data`, `svae.reproduce`).

A command line parses its flags before it imports TensorFlow (`svae.cli`), so
the packages it imports do not import TensorFlow themselves: `module_getattr`
makes a package's `__getattr__`, which imports the submodule that defines an
exported name the first time the name is read.
"""

import importlib

__all__ = ["module_getattr"]


def module_getattr(package, names, modules, submodules=()):
    """Returns the `__getattr__` of `package` that imports `names` on first use.

    Args:
      package: the package's `__name__`.
      names: the names it exports this way (its `__all__`: the names bound at
        import never reach `__getattr__`).
      modules: its submodules that define them, looked in in this order.
        Reading a name imports them, after `svae.cli.quiet_tensorflow` (they
        import TensorFlow), up to the first that has it.
      submodules: the submodules read as attributes; each is imported as it
        is (`from svae.data import prepare` reads the attribute, and prepare
        imports TensorFlow only after its flags).

    Returns:
      `__getattr__(name)`, which raises AttributeError for any other name.
    """
    names, submodules = frozenset(names), frozenset(submodules)

    def lazy_getattr(name):
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        if name in names:
            from svae import cli

            cli.quiet_tensorflow()
            for module_name in modules:
                module = importlib.import_module(f"{package}.{module_name}")
                if hasattr(module, name):
                    return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return lazy_getattr
