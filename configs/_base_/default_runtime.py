# Use the registries of mmdmpt; MMEngine's are reached through them.
default_scope = 'mmdmpt'
# MMEngine's Runner that can also run distributed on CPU-only machines (gloo).
runner_type = 'ReIDRunner'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Keep the last checkpoints only; `save_best` is off by default: the last
    # epoch is what we report (see configs/dmpt/README.md).
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # Rank-list pictures of the first test evaluation, drawn through the
    # visualizer below; `tools/test.py --show-dir DIR` turns it on.
    rank_list=dict(type='RankListHook', enable=False),
)

# Checkpoints of ours hold only tensors and primitive values, so they load
# with torch.load(weights_only=True). trainable_only='auto': a model with a
# frozen part (DMPT) stores only what it trains (prompts, mappings, head: MBs
# on top of the shared CLIP file); full fine-tuning stores everything.
custom_hooks = [
    dict(type='SafeCheckpointHook', trainable_only='auto'),
    # Stops at start-up when num_classes, modalities or batch sizes disagree.
    dict(type='DataModelCheckHook'),
    # Reseeds random/numpy/torch from (seed, epoch) and (seed, iteration), so a
    # resumed run draws the same numbers as an uninterrupted one; with the
    # per-sample seeds of IdentitySampler, resuming is exact
    # (docs/reliability.md).
    dict(type='ReseedHook'),
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # ReIDRunner switches to gloo when no GPU is present.
    dist_cfg=dict(backend='nccl'),
)

# A text log and a scalar log (vis_data/scalars.json) per run. For TensorBoard
# add dict(type='TensorboardVisBackend') (needs `pip install tensorboard`).
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='ReIDVisualizer', vis_backends=vis_backends)

log_processor = dict(by_epoch=True, window_size=10)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
