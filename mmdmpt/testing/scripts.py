"""Load a script that is not part of the package (a tool, a benchmark, a test helper) as a module.

The tests run ``main`` and the helpers of ``tools/*.py`` and
``benchmarks/*.py`` in-process; those files are scripts, not modules of an
importable package (pytest runs with ``--import-mode=importlib``), so they
are loaded from their path.
"""

import importlib.util
import os
import sys
from types import ModuleType
from typing import Optional, Union

__all__ = ['load_script']


def load_script(path: Union[str, os.PathLike], name: Optional[str] = None) -> ModuleType:
    """The module of the Python file ``path``, executed once and kept in ``sys.modules``.

    Args:
        path (str | PathLike): The file.
        name (str, optional): Its module name (the key in ``sys.modules``);
            loading the same name again returns the module already loaded.
            Defaults to ``'mmdmpt_script_'`` followed by the file's stem.

    Returns:
        ModuleType: The module.
    """
    path = os.fspath(path)
    if name is None:
        name = 'mmdmpt_script_' + os.path.splitext(os.path.basename(path))[0]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]
