# dataset settings: RGBNT201 (persons; RGB/NI/TI files; see docs/contracts.md and /work/shared/datasets.md)
dataset_type = 'RGBNT201'
data_root = 'data/RGBNT201/'
modalities = ('rgb', 'nir', 'tir')
# The dataloaders' datasets below take `type`, `data_root` and `modalities`
# from the three variables above, and the model takes `modalities` (filled in
# by ReIDRunner; a leaf config changes them once, `--data-root` moves every
# split).

# Normalisation happens here, per modality, on the device (0.5 mean / std in
# [0, 1] units for every channel); absent modalities are zeroed.
data_preprocessor = dict(
    type='MultiModalDataPreprocessor',
    mean=[127.5, 127.5, 127.5],
    std=[127.5, 127.5, 127.5],
)

# The SAME flip / crop / erasing for every modality of a sample
# (share_random_params=True); set it False to draw them per modality.
train_pipeline = [
    dict(type='LoadMultiModalImages'),
    dict(
        type='TransformBroadcaster',
        mapping={'img': 'imgs'},
        auto_remap=True,
        share_random_params=True,
        transforms=[
            dict(type='Resize', scale=(128, 256), interpolation='bicubic'),  # (w, h)
            dict(type='RandomFlip', prob=0.5, direction='horizontal'),
            dict(type='ReIDRandomCrop', padding=10),
            dict(type='ReIDRandomErasing', prob=0.5, fill=127),
        ],
    ),
    dict(type='PackMultiModalReIDInputs'),
]

test_pipeline = [
    dict(type='LoadMultiModalImages'),
    dict(
        type='TransformBroadcaster',
        mapping={'img': 'imgs'},
        auto_remap=True,
        transforms=[dict(type='Resize', scale=(128, 256), interpolation='bicubic')],
    ),
    dict(type='PackMultiModalReIDInputs'),
]

train_dataloader = dict(
    batch_size=64,
    num_workers=4,
    persistent_workers=True,
    # P x K batches: 64 = 16 identities x 4 samples; the sampler's
    # batch_size must equal the dataloader's.
    sampler=dict(type='IdentitySampler', batch_size=64, num_instances=4),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        split='train',
        pipeline=train_pipeline,
    ),
)

val_dataloader = dict(
    batch_size=128,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        split='test',  # query samples then gallery samples (is_query)
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader

# Same-id-same-camera rule.
val_evaluator = dict(type='ReIDMetric')
test_evaluator = val_evaluator
