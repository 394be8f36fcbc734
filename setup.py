"""Install mmdmpt (``pip install -e .``) or build its wheel (``pip wheel --no-deps .``).

A wheel (and a regular install) carries ``configs/``, ``tools/`` and
``model-index.yml`` inside the package, in ``mmdmpt/.mim/``, as OpenMMLab
packages do (mmpretrain's ``add_mim_extension``), so that
``mim train mmdmpt CONFIG`` and ``mmdmpt.apis.list_models()`` work from an
installed package. They are copied into the build folder only, never into the
source tree; an editable install reads them from the checkout itself.
"""

import os
import os.path as osp
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

#: What ``mmdmpt/.mim`` holds, relative to the repository root.
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def readme() -> str:
    with open(osp.join(osp.dirname(__file__), 'README.md'), encoding='utf-8') as f:
        return f.read()


def get_version() -> str:
    scope: dict = {}
    with open(osp.join(osp.dirname(__file__), 'mmdmpt', 'version.py')) as f:
        exec(compile(f.read(), 'version.py', 'exec'), scope)
    return scope['__version__']


def parse_requirements(fname: str) -> list:
    """Read one requirement per line, skipping comments and blank lines."""
    reqs = []
    with open(osp.join(osp.dirname(__file__), fname)) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if line:
                reqs.append(line)
    return reqs


def add_mim_extension(build_lib: str) -> list:
    """Copy :data:`MIM_FILES` into ``<build_lib>/mmdmpt/.mim``; return the files written."""
    root = osp.dirname(osp.abspath(__file__))
    mim = osp.join(build_lib, 'mmdmpt', '.mim')
    if osp.isdir(mim):
        shutil.rmtree(mim)  # no stale file of an earlier build
    os.makedirs(mim)
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
    for name in MIM_FILES:
        src, dst = osp.join(root, name), osp.join(mim, name)
        if osp.isdir(src):
            shutil.copytree(src, dst, ignore=ignore)
        elif osp.isfile(src):
            shutil.copyfile(src, dst)
        else:
            raise FileNotFoundError(f'{src} is missing: the package needs it in mmdmpt/.mim')
    return [osp.join(d, f) for d, _, files in os.walk(mim) for f in files]


class BuildPyWithMim(build_py):
    """``build_py`` that also fills ``mmdmpt/.mim`` in the build folder.

    In editable mode (``pip install -e .``) nothing is copied: the package
    runs from the checkout, where the configs and the index already are.
    """

    def run(self):
        """Build as usual, then fill ``mmdmpt/.mim`` (not in editable mode)."""
        super().run()
        if not self.editable_mode:
            self._mim_outputs = add_mim_extension(self.build_lib)

    def get_outputs(self, include_bytecode=True):
        """The built files, ``mmdmpt/.mim`` included."""
        return super().get_outputs(include_bytecode) + getattr(self, '_mim_outputs', [])


setup(
    name='mmdmpt',
    version=get_version(),
    description='Decoupled Modality-aware Prompt Tuning (DMPT) for multi-modal '
    'object re-identification, an OpenMMLab extension',
    long_description=readme(),
    long_description_content_type='text/markdown',
    keywords='re-identification, multi-modal, prompt tuning, CLIP',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'benchmarks')),
    include_package_data=True,
    python_requires='>=3.10',  # torch 2.14; the pinned set (make) needs 3.11
    license='Apache License 2.0',
    install_requires=parse_requirements('requirements/runtime.txt'),
    extras_require={
        'tests': parse_requirements('requirements/tests.txt'),
        # exact and approximate search of large galleries (tools/search.py --backend faiss)
        'faiss': parse_requirements('requirements/faiss.txt'),
        # ONNX export and its onnxruntime check (tools/deployment/pytorch2onnx.py)
        'deploy': parse_requirements('requirements/deploy.txt'),
    },
    cmdclass={'build_py': BuildPyWithMim},
    zip_safe=False,
)
