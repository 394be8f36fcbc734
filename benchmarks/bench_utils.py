"""Helpers shared by the cost benchmarks (``train_cost.py``, ``infer_cost.py``).

Each benchmark runs every variant in a fresh child process (the script
re-invokes itself with ``--variant NAME --result-file FILE``), so that the
peak memory of one variant is not inflated by another: on the CPU the peak is
the child's ``ru_maxrss`` (absolute, nothing subtracted), on a GPU
``torch.cuda.max_memory_allocated()``. Ratios are computed from numbers of the
same parent run.

Only the standard library and torch are imported at module level, so that
``--help`` and the parent process stay light; MMEngine / mmdmpt are imported
where a model is built.
"""

import argparse
import contextlib
import json
import os
import os.path as osp
import platform
import resource
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

#: The tiny CLIP used by ``--tiny`` (smoke tests): 4 layers of width 64,
#: 16x16 patches on 64x32 inputs (4x2 grid).
TINY_CLIP = dict(
    embed_dim=32,
    vision_cfg=dict(width=64, layers=4, heads=2, patch_size=16, image_size=(64, 32)),
    text_cfg=dict(width=64, layers=2, heads=2, context_length=77, vocab_size=49408),
)
TINY_IMG_SIZE = (64, 32)
#: The classifier size used for configs with ``num_classes='auto'`` (no data
#: here): RGBNT201's 171 training identities.
AUTO_NUM_CLASSES = 171


def add_common_args(parser: argparse.ArgumentParser, *, steps: int, warmup: int) -> None:
    """Add the options every cost benchmark shares.

    Args:
        parser (ArgumentParser): The script's parser.
        steps (int): Default number of timed iterations.
        warmup (int): Default number of untimed iterations first.
    """
    parser.add_argument('--batch-size', type=int, default=8, help='samples per batch (8)')
    parser.add_argument('--steps', type=int, default=steps, help=f'timed iterations ({steps})')
    parser.add_argument(
        '--warmup', type=int, default=warmup, help=f'untimed iterations first ({warmup})'
    )
    parser.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")
    parser.add_argument(
        '--amp',
        default='none',
        choices=['none', 'bf16', 'fp16'],
        help="autocast dtype ('none' = fp32, default)",
    )
    parser.add_argument(
        '--threads', type=int, default=None, help='torch CPU threads (default: torch default)'
    )
    parser.add_argument(
        '--quick-gelu',
        default='true',
        choices=['true', 'false', 'config'],
        help="MLP activation. 'true' (default) is what the configs use with OpenAI's weights "
        "(which pretrained=None cannot detect); 'config' keeps the config's quick_gelu "
        '(auto -> GELU without weights)',
    )
    parser.add_argument(
        '--tiny',
        action='store_true',
        help='a 4-layer, width-64 CLIP at 64x32 (smoke tests; numbers meaningless)',
    )
    parser.add_argument(
        '--in-process',
        action='store_true',
        help='run all variants in this process (smoke tests; peak memory then not separated)',
    )
    parser.add_argument(
        '--rounds',
        type=int,
        default=1,
        help='repeat the variants this many times, interleaved; the fastest round counts (1)',
    )
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=None, help='write the results as JSON to this file')
    parser.add_argument('--variant', default=None, help=argparse.SUPPRESS)
    parser.add_argument('--result-file', default=None, help=argparse.SUPPRESS)


def setup_torch(args: argparse.Namespace) -> torch.device:
    """Seed, set CPU threads and return the device (checked)."""
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise SystemExit('--device cuda but torch.cuda.is_available() is False')
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.amp == 'fp16' and device.type == 'cpu':
        raise SystemExit('--amp fp16 needs a GPU; use bf16 on the CPU')
    return device


def amp_context(args: argparse.Namespace, device: torch.device):
    """``torch.autocast`` for ``--amp``, or a null context."""
    if args.amp == 'none':
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if args.amp == 'bf16' else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on the CPU)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def current_rss_mb() -> float:
    """Current resident set size in MiB (Linux ``/proc``), else NaN."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
    except (OSError, ValueError):
        return float('nan')


def peak_rss_mb() -> float:
    """Peak resident set size of this process since it started, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == 'darwin' else peak / 1024  # bytes on macOS


def peak_memory_mb(device: torch.device) -> float:
    """The peak memory the benchmarks report: RSS on the CPU, allocated on a GPU."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def now_memory_mb(device: torch.device) -> float:
    """Memory in use now: RSS on the CPU, allocated on a GPU."""
    if device.type == 'cuda':
        return torch.cuda.memory_allocated(device) / 2**20
    return current_rss_mb()


def time_iterations(
    fn: Callable[[], None], steps: int, warmup: int, device: torch.device
) -> List[float]:
    """Run ``fn`` ``warmup`` times untimed, then ``steps`` times; return the times (s)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return float(ordered[mid - 1] + ordered[mid]) / 2.0


def load_model_cfg(
    config: str, *, tiny: bool, quick_gelu: str, overrides: Optional[dict] = None
) -> dict:
    """Read a config's ``model`` dict for a benchmark build.

    ``pretrained`` is set to None (random weights cost the same), the MLP
    activation follows ``quick_gelu`` and ``--tiny`` swaps in :data:`TINY_CLIP`.

    Args:
        config (str): Config file path (absolute, or relative to the repo root).
        tiny (bool): Use the tiny CLIP.
        quick_gelu (str): ``'true'``, ``'false'`` or ``'config'``.
        overrides (dict, optional): Extra ``model.backbone`` keys.
            Defaults to None.

    Returns:
        dict: The model config, ready for ``MODELS.build``.
    """
    from mmengine.config import Config

    path = config if osp.isabs(config) or osp.exists(config) else osp.join(ROOT, config)
    cfg = Config.fromfile(path)
    model = cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') else dict(cfg.model)
    backbone = model['backbone']
    backbone['pretrained'] = None
    if quick_gelu != 'config':
        backbone['quick_gelu'] = quick_gelu == 'true'
    if tiny:
        backbone['clip_model'] = TINY_CLIP
        backbone['img_size'] = TINY_IMG_SIZE
        if backbone.get('bind_layers'):
            backbone['bind_layers'] = 'auto'
    backbone.update(overrides or {})
    if model['head'].get('num_classes') == 'auto':  # the Runner reads it from the data
        model['head']['num_classes'] = AUTO_NUM_CLASSES
    model.pop('data_preprocessor', None)  # inputs are made already normalised
    return model


def build_optimizer(config: str, params: Sequence[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The config's ``optim_wrapper.optimizer`` (a ``torch.optim`` class) on ``params``.

    Falls back to ``torch.optim.Adam`` with PyTorch's defaults when the config
    has no optimizer or names a class outside ``torch.optim``.
    """
    from mmengine.config import Config

    path = config if osp.isabs(config) or osp.exists(config) else osp.join(ROOT, config)
    cfg = Config.fromfile(path)
    optim = dict(cfg.get('optim_wrapper', {}).get('optimizer', {}) or {})
    name = str(optim.pop('type', 'Adam')).split('.')[-1]
    cls = getattr(torch.optim, name, None)
    if cls is None:
        cls, optim = torch.optim.Adam, {}
    return cls(list(params), **optim)


def build_model(model_cfg: dict, device: torch.device) -> torch.nn.Module:
    """Build ``MultiModalReID`` quietly (warnings only) in the ``mmdmpt`` scope."""
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope

    import mmdmpt  # noqa: F401  (registers the modules)
    from mmdmpt.registry import MODELS

    MMLogger.get_instance(f'bench_{os.getpid()}_{time.time_ns()}', log_level='WARNING')
    init_default_scope('mmdmpt')
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')
    try:
        with contextlib.redirect_stdout(sys.stderr):
            model = MODELS.build(model_cfg)
    finally:
        logger.setLevel(level)
    return model.to(device)


def make_batch(
    num_samples: int,
    num_modalities: int,
    img_size: Sequence[int],
    device: torch.device,
    num_instances: int = 4,
    seed: int = 0,
) -> tuple:
    """A normalised random batch ``(N, M, 3, H, W)`` and P x K data samples.

    Args:
        num_samples (int): N.
        num_modalities (int): M.
        img_size (Sequence[int]): ``(H, W)``.
        device (torch.device): Where the inputs go.
        num_instances (int): K, samples per identity. Defaults to 4.
        seed (int): Random seed. Defaults to 0.

    Returns:
        tuple: ``(inputs, data_samples)``.
    """
    from mmpretrain.structures import DataSample

    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(num_samples, num_modalities, 3, *img_size, generator=gen)
    k = max(1, min(num_instances, num_samples))
    samples = [DataSample().set_gt_label(i // k) for i in range(num_samples)]
    return inputs.to(device), samples


def run_variants(
    script: str,
    argv: Sequence[str],
    variants: Sequence[str],
    run_one: Callable[[str], Dict[str, float]],
    in_process: bool,
    rounds: int = 1,
) -> Dict[str, Dict[str, float]]:
    """Run each variant in a fresh child process (or here, with ``in_process``).

    With ``rounds > 1`` the sequence of variants is repeated (interleaved, so
    that a burst of load from other processes hits every variant alike); a
    variant's ``step_s`` is then the smallest of its per-round medians (other
    load can only add time), ``peak_mb`` the largest peak, and the per-round
    medians are kept in ``step_s_rounds``.

    Args:
        script (str): The benchmark script to re-invoke.
        argv (Sequence[str]): The parent's arguments, passed on to the children.
        variants (Sequence[str]): Variant names, in order.
        run_one (Callable): ``run_one(variant) -> result dict`` (in-process mode).
        in_process (bool): Skip the child processes.
        rounds (int): Repetitions of the whole sequence. Defaults to 1.

    Returns:
        dict: ``{variant: result}``.
    """
    per_round: Dict[str, List[dict]] = {v: [] for v in variants}
    for index in range(max(1, rounds)):
        for variant in variants:
            if in_process:
                per_round[variant].append(run_one(variant))
                continue
            per_round[variant].append(_run_child(script, argv, variant))
            print(f'  round {index + 1}: {variant} done', file=sys.stderr, flush=True)
    results = {}
    for variant, runs in per_round.items():
        best = min(runs, key=lambda r: r['step_s'])
        result = dict(best)
        result['peak_mb'] = max(r['peak_mb'] for r in runs)
        result['step_s_rounds'] = [r['step_s'] for r in runs]
        results[variant] = result
    return results


def run_benchmark(
    script: str,
    argv: Sequence[str],
    args: argparse.Namespace,
    run_one: Callable[[str], Dict[str, float]],
    rounds: Optional[int] = None,
) -> Optional[Dict[str, Dict[str, float]]]:
    """The ``main`` of a per-variant benchmark, child and parent sides.

    In a child process (``--variant NAME``) run that variant, hand its
    numbers to the parent and return None. In the parent apply
    ``--threads`` and run every variant of ``args.variants`` through
    :func:`run_variants`.

    Args:
        script (str): The benchmark script (``__file__``), re-invoked per variant.
        argv (Sequence[str]): The command-line arguments.
        args (Namespace): The parsed arguments (``add_common_args`` and
            ``--variants``).
        run_one (Callable): ``run_one(variant) -> result dict``.
        rounds (int, optional): Rounds; defaults to ``args.rounds``.

    Returns:
        dict or None: ``{variant: result}`` in the parent, None in a child.
    """
    if args.variant is not None:
        write_result_file(args.result_file, run_one(args.variant))
        return None
    if args.threads:
        torch.set_num_threads(args.threads)
    return run_variants(
        osp.abspath(script),
        argv,
        args.variants,
        run_one,
        args.in_process,
        args.rounds if rounds is None else rounds,
    )


def _run_child(script: str, argv: Sequence[str], variant: str) -> Dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        result_file = osp.join(tmp, 'result.json')
        cmd = [
            sys.executable,
            script,
            *_strip_out(argv),
            '--variant',
            variant,
            '--result-file',
            result_file,
        ]
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(p for p in (ROOT, env.get('PYTHONPATH', '')) if p)
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0 or not osp.exists(result_file):
            raise SystemExit(f'variant {variant!r} failed (exit code {proc.returncode})')
        with open(result_file) as f:
            return json.load(f)


def _strip_out(argv: Sequence[str]) -> List[str]:
    """Drop ``--out FILE`` (only the parent writes it)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == '--out':
            skip = True
            continue
        if arg.startswith('--out='):
            continue
        out.append(arg)
    return out


def write_result_file(path: str, result: Dict[str, float]) -> None:
    """Child side: hand one variant's numbers to the parent."""
    with open(path, 'w') as f:
        json.dump(result, f)


def machine_info(device: torch.device) -> Dict[str, str]:
    """A few facts about where the numbers come from."""
    info = dict(
        torch=torch.__version__,
        python=platform.python_version(),
        cpu=platform.processor() or platform.machine(),
        cpu_count=str(os.cpu_count()),
        threads=str(torch.get_num_threads()),
        device=str(device),
        date=time.strftime('%Y-%m-%d %H:%M %Z'),
    )
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table with padded columns."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = [
        '| ' + ' | '.join(str(h).ljust(w) for h, w in zip(header, widths)) + ' |',
        '|' + '|'.join('-' * (w + 2) for w in widths) + '|',
    ]
    for row in rows:
        lines.append('| ' + ' | '.join(str(x).ljust(w) for x, w in zip(row, widths)) + ' |')
    return '\n'.join(lines)


def write_json(path: Optional[str], results: dict) -> None:
    """Write ``results`` to ``path`` (directories created), if given."""
    if not path:
        return
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, 'w') as f:
        json.dump(results, f, indent=2)
        f.write('\n')
