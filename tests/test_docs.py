"""The guides' commands name scripts, options, configs and pages that exist.

Every ``python tools/...``, ``python benchmarks/...``, ``bash tools/...`` and
``make ...`` command in the code blocks (and inline code) of README.md,
configs/dmpt/README.md and docs/*.md must name an existing script whose
``--help`` lists each ``--option`` used; every ``configs/...py`` path in them
must exist, and so must every relative link.
"""

import glob
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [ROOT / 'README.md', ROOT / 'configs' / 'dmpt' / 'README.md']
    + [Path(p) for p in glob.glob(str(ROOT / 'docs' / '*.md'))]
)
GUIDES = (
    'README.md',
    'get_started.md',
    'train_test.md',
    'missing_modalities.md',
    'custom_dataset.md',
    'search.md',
    'deployment.md',
    'benchmarks.md',
    'reliability.md',
    'architecture.md',
    'method.md',
    'datasets.md',
    'changelog.md',
    'faq.md',
)
SHELL_LANGS = {'bash', 'sh', 'shell', 'console'}
PYTHONS = {'python', 'python3', '.venv/bin/python', '$(PY)'}
FENCE = re.compile(r'^```(\w*)\n(.*?)^```', re.S | re.M)
INLINE = re.compile(r'`((?:python|bash) (?:tools|benchmarks)/[^`]+)`')


def rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def shell_commands(text: str):
    """The commands of a page: shell code blocks (continuations joined) and inline code."""
    found = []
    for lang, body in FENCE.findall(text):
        if lang not in SHELL_LANGS:
            continue
        for line in body.replace('\\\n', ' ').splitlines():
            line = line.split(' #')[0].strip()
            if line and not line.startswith('#'):
                found += [part.strip() for part in re.split(r'&&|;', line) if part.strip()]
    found += INLINE.findall(text.replace('\n', ' '))
    return found


def parse(command: str):
    """``(kind, script or target, options)`` of a command, or None when not ours."""
    tokens = shlex.split(command.replace('[', ' ').replace(']', ' ').replace('|', ' '))
    while tokens and (re.match(r'^\w+=', tokens[0]) or tokens[0] == 'time'):
        tokens = tokens[1:]  # environment assignments, `time`
    if len(tokens) >= 2 and tokens[0] in PYTHONS and tokens[1].endswith('.py'):
        kind, script, rest = 'python', tokens[1], tokens[2:]
    elif len(tokens) >= 2 and tokens[0] == 'bash' and tokens[1].endswith('.sh'):
        kind, script, rest = 'bash', tokens[1], tokens[2:]
    elif len(tokens) >= 2 and tokens[0] == 'make':
        return 'make', tokens[1], []
    else:
        return None
    options = [t.split('=')[0] for t in rest if t.startswith('--')]
    return kind, script, options


#: Runs each script as ``__main__`` with ``--help`` in one interpreter (heavy imports
#: such as torch happen once) and prints ``{script: help text}`` as JSON.
HELP_DRIVER = """
import contextlib, io, json, runpy, sys
helps = {}
for script in sys.argv[1:]:
    out = io.StringIO()
    sys.argv = [script, '--help']
    code = None
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(script, run_name='__main__')
    except SystemExit as exc:
        code = exc.code
    helps[script] = out.getvalue() if code in (0, None) else f'ERROR: exit {code}'
print(json.dumps(helps))
"""


def help_texts(scripts):
    """``{script: its --help output}``, run from the repository root."""
    proc = subprocess.run(
        [sys.executable, '-c', HELP_DRIVER, *scripts],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS='1'),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def help_options(text: str) -> frozenset:
    return frozenset(re.findall(r'(?<![\w-])(--[\w-]+)', text))


def all_commands():
    return [(rel(page), cmd) for page in PAGES for cmd in shell_commands(page.read_text())]


def test_every_guide_exists_and_is_indexed():
    index = (ROOT / 'docs' / 'README.md').read_text()
    readme = (ROOT / 'README.md').read_text()
    for name in GUIDES[1:]:
        assert (ROOT / 'docs' / name).is_file(), f'docs/{name} is missing'
        assert f']({name})' in index, f'docs/README.md does not link {name}'
        assert f'](docs/{name})' in readme, f'README.md does not link docs/{name}'


def test_the_extractor_finds_commands():
    text = (
        '```bash\nWHL_DIR=x bash tools/dist_test.sh CFG CKPT 4  # a comment\n'
        'python tools/test.py CFG CKPT \\\n    --missing all\nmake demo && make test\n```\n'
        '```python\npython tools/not_a_shell_block.py\n```\n'
        'Inline: `python tools/misc/verify_dataset.py CONFIG [--splits train]`.'
    )
    parsed = [parse(c) for c in shell_commands(text)]
    assert parsed == [
        ('bash', 'tools/dist_test.sh', []),
        ('python', 'tools/test.py', ['--missing']),
        ('make', 'demo', []),
        ('make', 'test', []),
        ('python', 'tools/misc/verify_dataset.py', ['--splits']),
    ]


def test_commands_name_existing_scripts_and_options():
    commands = [(page, cmd, parse(cmd)) for page, cmd in all_commands()]
    commands = [(page, cmd, p) for page, cmd, p in commands if p is not None]
    scripts = sorted({p[1] for _, _, p in commands if p[0] == 'python'})
    assert {'tools/train.py', 'tools/test.py', 'tools/misc/gen_model_zoo.py'} <= set(scripts)
    missing = [
        f'{page}: {cmd}'
        for page, cmd, p in commands
        if p[0] != 'make' and not (ROOT / p[1]).is_file()
    ]
    assert not missing, 'scripts that do not exist:\n' + '\n'.join(missing)
    texts = help_texts(scripts)
    failed = [script for script, text in texts.items() if '--help' not in text]
    assert not failed, f'--help failed: {failed}'
    helps = {script: help_options(text) for script, text in texts.items()}
    makefile = (ROOT / 'Makefile').read_text()
    bad = []
    for page, cmd, (kind, script, options) in commands:
        if kind == 'make':
            if not re.search(rf'^{re.escape(script)}:', makefile, re.M):
                bad.append(f'{page}: {cmd} (no make target {script})')
        elif kind == 'python':
            unknown = [o for o in options if o not in helps[script]]
            if unknown:
                bad.append(f'{page}: {cmd} (not in {script} --help: {unknown})')
    assert not bad, '\n'.join(bad)


@pytest.mark.parametrize('page', PAGES, ids=rel)
def test_config_paths_and_links_exist(page):
    text = page.read_text()
    for path in re.findall(r'(?<![\w/.])(configs/[\w./-]+\.(?:py|yml|md))', text):
        assert (ROOT / path).is_file(), f'{rel(page)}: {path} does not exist'
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
        if target.startswith(('http://', 'https://', '#', 'mailto:')):
            continue
        path = (page.parent / target.split('#')[0]).resolve()
        assert path.exists(), f'{rel(page)}: link {target} points nowhere'


def test_demo_checkpoint_named_as_in_the_model_index():
    import yaml

    models = yaml.safe_load((ROOT / 'configs' / 'dmpt' / 'metafile.yml').read_text())['Models']
    (weights,) = [m['Weights'] for m in models if m.get('Weights')]
    for page in PAGES:
        for path in re.findall(r'work_dirs/demo/dmpt/epoch_\d+\.pth', page.read_text()):
            assert path == weights, f'{rel(page)} names {path}; the model index has {weights}'
