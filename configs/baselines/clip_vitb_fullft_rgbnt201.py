# Full fine-tuning of the same CLIP ViT-B/16 (no prompts), for side-by-side
# cost and accuracy comparisons with configs/dmpt/dmpt_vitb_rgbnt201.py.
_base_ = [
    '../_base_/models/clip_vit-b16_fullft.py',
    '../_base_/datasets/rgbnt201_bs64_256x128.py',
    '../_base_/schedules/adam_cosine_60e.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(img_size=(256, 128), object_name='person'),
)

# A whole CLIP tower needs a far smaller step than prompts (CLIP-ReID's choice).
optim_wrapper = dict(optimizer=dict(lr=5e-6))
