"""``make demo``: DMPT's story at toy scale, on synthetic data, on a CPU.

1. Writes a synthetic benchmark in the RGBNT201 layout and a second synthetic
   identity set with disjoint ids (both under ``data/synthetic_demo/``).
2. Stand-in pretraining: trains a tiny CLIP-architecture visual tower from
   scratch on the RGB images ONLY of the second set (as CLIP saw visible light
   only) and saves it in open_clip format under ``checkpoints/demo/``.
3. Evaluates on the benchmark's test ids: (a) the frozen pretrained backbone
   before any prompt training, (b) DMPT after training its prompts and head on
   all three modalities with the backbone frozen, (c) the same DMPT config on a
   randomly initialised backbone, trained for the same number of iterations.
4. Prints a report: the three results, the trainable-parameter ratio, the
   missing-modality table, and where the rank-list pictures and curves are.

Re-running reuses ``.venv``, the data and the stand-in checkpoint (each is made
again only when its recorded settings differ from the ones below); the DMPT
runs are trained again, replacing their folders under ``work_dirs/demo/``.
Everything here is synthetic: the numbers show that the machinery learns, not
how DMPT does on real benchmarks.
"""

import argparse
import hashlib
import json
import os
import os.path as osp
import shutil
import sys
import time

DMPT_CONFIG = 'configs/dmpt/dmpt_vit-tiny_synthetic.py'
STANDIN_CONFIG = 'configs/demo/standin_vit-tiny_rgb-pretrain.py'
IMAGE_SIZE = dict(height=128, width=64)
# The benchmark: 180 ids in families of 3 (members differ in one modality
# only), 150 train ids (the DMPT config's num_classes) and 30 test ids.
BENCHMARK = dict(num_ids=180, train_ids=150, seed=0, id_offset=1)
# The stand-in's pretraining set: other ids (from 1001, other seed), each its
# own family (family_size=1), so that every identity differs in RGB, the only
# modality the stand-in sees; 290 train ids (the stand-in config's
# num_classes). Its 10 test ids are not used.
PRETRAIN_SET = dict(num_ids=300, train_ids=290, seed=1, id_offset=1001, family_size=1)
DATA_SETS = (('RGBNT201', BENCHMARK), ('pretrain', PRETRAIN_SET))
STAMP = 'demo_settings.json'
METRICS = ('reid/mAP', 'reid/Rank-1', 'reid/mINP')
# Targets the demo is tuned to meet (on its fixed seeds).
TARGET_MAP, TARGET_GAIN = 75.0, 15.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data-root', default='data/synthetic_demo', help='synthetic data folder')
    parser.add_argument('--work-dir', default='work_dirs/demo', help='logs, checkpoints, pictures')
    parser.add_argument(
        '--standin',
        default='checkpoints/demo/standin_vit-tiny_rgb.safetensors',
        help='the stand-in backbone (made once, reused)',
    )
    return parser.parse_args(argv)


def say(text: str) -> None:
    print(f'\n[demo] {text}', flush=True)


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path: str, obj) -> None:
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as f:
        json.dump(obj, f, indent=1, sort_keys=True)


def data_settings(spec: dict) -> dict:
    """Everything a synthetic set depends on (compared with its stamp)."""
    return dict(layout='rgbnt201', **IMAGE_SIZE, **spec)


def make_data(root: str) -> None:
    """Write the two synthetic sets, or reuse them when their settings match."""
    from mmdmpt.datasets.synthetic import make_synthetic

    for name, spec in DATA_SETS:
        out = osp.join(root, name)
        settings = data_settings(spec)
        stamp = osp.join(out, STAMP)
        if osp.isfile(osp.join(out, 'synthetic_meta.json')) and _read_json(stamp) == settings:
            say(f'reusing the synthetic set in {out}')
            continue
        t = time.time()
        say(f'writing a synthetic set (RGBNT201 layout, 128x64, {spec["num_ids"]} ids) to {out}')
        if osp.exists(stamp):
            os.remove(stamp)
        make_synthetic(out, overwrite=True, **settings)
        _write_json(stamp, settings)
        say(f'  done in {time.time() - t:.0f} s')


def load_cfg(path: str, work_dir: str, data_root: str):
    from mmengine.config import Config

    cfg = Config.fromfile(path)
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name)
        if loader:
            sub = 'pretrain' if 'pretrain' in loader.dataset.data_root else 'RGBNT201'
            loader.dataset.data_root = osp.join(data_root, sub)
    return cfg


def build_runner(cfg):
    """Build the config's Runner the way tools/train.py does."""
    from mmengine.registry import RUNNERS, init_default_scope
    from mmengine.runner import Runner

    if 'runner_type' in cfg:
        init_default_scope(cfg.get('default_scope', 'mmdmpt'))
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def standin_settings() -> dict:
    """What the stand-in checkpoint depends on (compared with its stamp).

    The resolved stand-in config (its ``_base_`` files included, comments not)
    and the pretraining set's settings.
    """
    from mmengine.config import Config

    resolved = json.dumps(Config.fromfile(STANDIN_CONFIG).to_dict(), sort_keys=True, default=str)
    return dict(
        config=STANDIN_CONFIG,
        config_md5=hashlib.md5(resolved.encode()).hexdigest(),
        data=data_settings(PRETRAIN_SET),
    )


def make_standin(args: argparse.Namespace) -> str:
    """Pretrain and export the stand-in, or reuse it; return what was done."""
    stamp = osp.splitext(args.standin)[0] + '.json'
    settings = standin_settings()
    if osp.isfile(args.standin) and _read_json(stamp) == settings:
        say(f'reusing the stand-in backbone {args.standin}')
        return 'reused'
    say(
        'step 1: stand-in pretraining of a tiny CLIP-architecture ViT from scratch on the RGB '
        'images ONLY of the pretraining set (ids disjoint from the benchmark)'
    )
    work_dir = osp.join(args.work_dir, 'standin')
    shutil.rmtree(work_dir, ignore_errors=True)
    cfg = load_cfg(STANDIN_CONFIG, work_dir, args.data_root)
    runner = build_runner(cfg)
    runner.train()
    ckpt = osp.join(work_dir, f'epoch_{cfg.train_cfg.max_epochs}.pth')
    converter = osp.join(osp.dirname(osp.abspath(__file__)), 'model_converters')
    sys.path.insert(0, converter)
    try:
        import reid_to_open_clip
    finally:
        sys.path.remove(converter)
    if osp.exists(stamp):
        os.remove(stamp)
    if reid_to_open_clip.main([STANDIN_CONFIG, ckpt, args.standin]) != 0:
        raise SystemExit('exporting the stand-in backbone failed')
    _write_json(stamp, settings)
    return 'trained'


def run_dmpt(args, name: str, train: bool, pretrained, prompts: bool = True, test_cfg=None):
    """Build a Runner for the demo DMPT config, optionally train, then test."""
    work_dir = osp.join(args.work_dir, name)
    shutil.rmtree(work_dir, ignore_errors=True)  # a fresh run each time
    cfg = load_cfg(DMPT_CONFIG, work_dir, args.data_root)
    cfg.model.backbone.pretrained = pretrained
    if not prompts:
        # (a): the frozen backbone's own features, untouched by any training.
        cfg.model.backbone.update(
            num_modality_prompts=0, num_semantic_prompts=0, num_bind_prompts=0, bind_layers=()
        )
        cfg.model.head.test_feature = 'before'
    out_file = osp.join(cfg.work_dir, 'test_metrics.json')
    cfg.test_cfg = dict(type='ReIDTestLoop', out_file=out_file, **(test_cfg or {}))
    runner = build_runner(cfg)
    iters = 0
    if train:
        runner.train()
        iters = runner.iter
    runner.test()
    with open(out_file) as f:
        return runner, json.load(f), iters


def row(label: str, metrics: dict) -> str:
    values = ''.join(f'{metrics[k]:9.1f}' for k in METRICS)
    return f'  {label:<48}{values}'


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.time()
    say(
        'mmdmpt demo. The data are SYNTHETIC and the backbone is a TOY stand-in for CLIP; the '
        'numbers show that the machinery learns, not how DMPT does on real benchmarks.'
    )
    make_data(args.data_root)
    t = time.time()
    standin_state = make_standin(args)
    standin_time = time.time() - t

    say('step 2a: the frozen pretrained backbone, no prompts, no training')
    _, frozen, _ = run_dmpt(args, 'frozen', train=False, pretrained=args.standin, prompts=False)

    say('step 2b: DMPT on the frozen stand-in backbone (only prompts and head are trained)')
    t = time.time()
    show_dir = osp.join(args.work_dir, 'dmpt', 'rank_lists')
    runner, dmpt, dmpt_iters = run_dmpt(
        args,
        'dmpt',
        train=True,
        pretrained=args.standin,
        test_cfg=dict(missing='all', show_dir=show_dir, show_num=4),
    )
    dmpt_time = time.time() - t
    from mmdmpt.engine.loops import format_table
    from mmdmpt.models.utils import count_parameters
    from mmdmpt.visualization import plot_curves

    counts = count_parameters(runner.model)
    curves = osp.join(args.work_dir, 'dmpt', 'curves.png')
    plot_curves(osp.join(args.work_dir, 'dmpt'), curves, title='DMPT on the frozen stand-in')
    vision = runner.cfg.model.backbone.clip_model.vision_cfg
    val_interval = runner.cfg.train_cfg.get('val_interval', 1)
    del runner

    say('step 2c: the same DMPT config on a randomly initialised backbone, same iterations')
    t = time.time()
    _, random_init, random_iters = run_dmpt(args, 'random_init', train=True, pretrained=None)
    random_time = time.time() - t

    bench = _read_json(osp.join(args.data_root, 'RGBNT201', 'synthetic_meta.json'))
    pre = _read_json(osp.join(args.data_root, 'pretrain', 'synthetic_meta.json'))
    a, b, c = (next(iter(m.values())) for m in (frozen, dmpt, random_init))
    gain = b['reid/mAP'] - a['reid/mAP']
    met = b['reid/mAP'] >= TARGET_MAP and gain >= TARGET_GAIN
    missed = f'  [below the demo target: mAP >= {TARGET_MAP:.0f}, gain >= {TARGET_GAIN:.0f}]'
    table = format_table({k: {n: m[n] for n in METRICS} for k, m in dmpt.items()})
    standin_note = 'reused' if standin_state == 'reused' else f'{standin_time:.0f} s'
    lines = [
        '=' * 78,
        'mmdmpt demo report. SYNTHETIC data and a TOY stand-in backbone: NOT real CLIP,',
        'NOT a real benchmark. The numbers show that the machinery learns, nothing more.',
        '',
        f'Benchmark: synthetic, RGBNT201 layout, 128x64, {len(bench["train_ids"])} train ids, '
        f'{len(bench["test_ids"])} test ids;',
        f'  families of {bench["family_size"]} ids that differ only in RGB colour, NIR pattern '
        'or TIR pattern.',
        f'Stand-in for CLIP: a {vision.layers}-layer, width-{vision.width} CLIP-architecture ViT '
        '(open_clip) trained',
        f'  from scratch on the RGB images ONLY of {len(pre["train_ids"])} other synthetic ids, '
        'saved as an',
        '  open_clip checkpoint, loaded like real CLIP weights (`pretrained`), frozen.',
        f'DMPT: prompts + BNNeck head trained for {dmpt_iters} iterations on RGB, NIR and TIR',
        '  of the train ids.',
        'All results: test ids, same-id-same-camera rule, last epoch (nothing selected).',
        '',
        f'  {"":<48}{"mAP":>9}{"Rank-1":>9}{"mINP":>9}',
        row('(a) frozen pretrained backbone, before prompts', a),
        row('(b) DMPT after training (backbone frozen)', b),
        row('(c) same DMPT config, random-init backbone', c),
        f'  (b) - (a): {gain:+.1f} mAP points' + ('' if met else missed),
        f'  (c) was trained for the same {random_iters} iterations; the features of a frozen',
        '  random tower follow the camera (background, illumination), not the person,',
        '  and prompts alone cannot undo that: pretraining is what DMPT builds on.',
        '',
        f'Trainable parameters: {counts["trainable_params"]:,} of {counts["total_params"]:,}; '
        f'without the ID classifier',
        f'  {counts["trainable_params_no_classifier"]:,} = {100 * counts["ratio"]:.2f} % of the '
        f'{counts["backbone_params"]:,}-parameter frozen visual tower.',
        '',
        table.replace('Missing-modality evaluation', 'Missing-modality evaluation of (b)'),
        '',
        f'Rank-list pictures: {show_dir}/',
        f'Loss and metric curves: {curves}',
        f'  (its mAP / Rank-1 points, every {val_interval} epochs, are on the test ids: a plot, '
        'no selection)',
        f'Times: stand-in pretraining {standin_note}, DMPT {dmpt_time:.0f} s, random-init '
        f'{random_time:.0f} s; whole run {time.time() - start:.0f} s.',
        '=' * 78,
    ]
    report = '\n'.join(lines)
    os.makedirs(args.work_dir, exist_ok=True)
    with open(osp.join(args.work_dir, 'report.txt'), 'w') as f:
        f.write(report + '\n')
    print('\n' + report, flush=True)


if __name__ == '__main__':
    main()
