_base_ = [
    '../_base_/models/dmpt_vit-b16.py',
    '../_base_/datasets/rgbnt100_bs128_128x256.py',
    '../_base_/schedules/adam_cosine_30e.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(img_size=(128, 256), object_name='vehicle'),
)
