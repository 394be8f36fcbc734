_base_ = [
    '../_base_/models/dmpt_vit-b16.py',
    '../_base_/datasets/rgbnt201_bs64_256x128.py',
    '../_base_/schedules/adam_cosine_60e.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(img_size=(256, 128), object_name='person'),
)
