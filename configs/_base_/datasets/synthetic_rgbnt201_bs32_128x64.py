# The synthetic benchmark of `make demo` (RGBNT201 layout, written by
# tools/dataset_converters/make_synthetic.py at 128x64) with the RGBNT201
# recipe scaled down: 128x64 inputs, batches of 8 identities x 4 samples.
_base_ = ['./rgbnt201_bs64_256x128.py']

data_root = 'data/synthetic_demo/RGBNT201/'

train_pipeline = [
    dict(type='LoadMultiModalImages'),
    dict(
        type='TransformBroadcaster',
        mapping={'img': 'imgs'},
        auto_remap=True,
        share_random_params=True,
        transforms=[
            dict(type='Resize', scale=(64, 128), interpolation='bicubic'),  # (w, h)
            dict(type='RandomFlip', prob=0.5, direction='horizontal'),
            dict(type='ReIDRandomCrop', padding=5),
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
        transforms=[dict(type='Resize', scale=(64, 128), interpolation='bicubic')],
    ),
    dict(type='PackMultiModalReIDInputs'),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=1,
    sampler=dict(type='IdentitySampler', batch_size=32, num_instances=4),
    dataset=dict(pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=64,
    num_workers=1,
    dataset=dict(pipeline=test_pipeline),
)
test_dataloader = val_dataloader
