"""Install mmdmpt: ``pip install -e .``."""

import os.path as osp

from setuptools import find_packages, setup


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
    zip_safe=False,
)
