# A tiny DMPT config for end-to-end tests of the tools: the real _base_ files
# with a 2-layer CLIP-architecture ViT at 64x32 and one short epoch. The tests
# set data roots with --cfg-options.
_base_ = [
    '../../configs/_base_/models/dmpt_vit-b16.py',
    '../../configs/_base_/datasets/rgbnt201_bs64_256x128.py',
    '../../configs/_base_/schedules/adam_cosine_60e.py',
    '../../configs/_base_/default_runtime.py',
]

model = dict(
    backbone=dict(
        clip_model=dict(
            _delete_=True,
            embed_dim=32,
            vision_cfg=dict(width=64, layers=3, heads=2, patch_size=16),
            text_cfg=dict(width=64, layers=2, heads=2, context_length=77, vocab_size=49408),
        ),
        img_size=(64, 32),
        bind_layers=(1,),
        pretrained=None,
    ),
    head=dict(in_channels=3 * 64, num_classes=6),
)

resize = dict(type='Resize', scale=(32, 64), interpolation='bicubic')
train_pipeline = [
    dict(type='LoadMultiModalImages'),
    dict(
        type='TransformBroadcaster',
        mapping={'img': 'imgs'},
        auto_remap=True,
        share_random_params=True,
        transforms=[resize, dict(type='RandomFlip', prob=0.5, direction='horizontal')],
    ),
    dict(type='PackMultiModalReIDInputs'),
]
test_pipeline = [
    dict(type='LoadMultiModalImages'),
    dict(
        type='TransformBroadcaster', mapping={'img': 'imgs'}, auto_remap=True, transforms=[resize]
    ),
    dict(type='PackMultiModalReIDInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(batch_size=8, num_instances=4),
    dataset=dict(pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=7, num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline)
)
test_dataloader = val_dataloader

max_epochs = 2
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs)
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
randomness = dict(seed=0, deterministic=True)
