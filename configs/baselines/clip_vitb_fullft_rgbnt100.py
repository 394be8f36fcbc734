# Full fine-tuning of the same CLIP ViT-B/16 (no prompts), for side-by-side
# cost and accuracy comparisons with configs/dmpt/dmpt_vitb_rgbnt100.py.
_base_ = [
    '../_base_/models/clip_vit-b16_fullft.py',
    '../_base_/datasets/rgbnt100_bs128_128x256.py',
    '../_base_/schedules/adam_cosine_30e.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(img_size=(128, 256), object_name='vehicle'),
)

# A whole CLIP tower needs a far smaller step than prompts (CLIP-ReID's choice).
optim_wrapper = dict(optimizer=dict(lr=5e-6))
