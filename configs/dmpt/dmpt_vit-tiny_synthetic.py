# `make demo`, step 2: DMPT on the frozen toy stand-in backbone (pretrained on
# the RGB images of a disjoint synthetic identity set by
# configs/demo/standin_vit-tiny_rgb-pretrain.py), adapted to NIR and TIR by
# prompts alone. Synthetic data, toy model: it shows that the method learns,
# not how it does on real benchmarks.
#
# The demo's benchmark (tools/demo.py): 180 ids in families of 3, 150 train ids
# and 30 test ids. Held-out ids: 30 of the 150 training ids (val_fraction=0.2,
# as many as there are test ids) are kept out of training; the 'val' split
# (one query per id and camera, the rest gallery) measures the runs (the
# selection below: after the last epoch). The test ids are used once, by
# tools/demo.py, for its table.
#
# Selection of the learning rate, epochs and test feature on the frozen
# stand-in (1 CPU thread, 75 iterations of 32 per epoch on the 120 ids, the
# cosine schedule below scaled to each length). Rule, fixed before the runs:
# the highest held-out mAP; candidates within 1.0 mAP of it are tied, and
# among them the fewest epochs win (then the higher mAP). Held-out mAP with
# the test feature after / before the BNNeck (one training run gives both):
#                 4 epochs         8 epochs         12 epochs
#   lr 1e-3    94.7 / 94.3      95.4 / 95.4      95.5 / 95.6
#   lr 2e-3    95.7 / 95.0      96.3 / 95.9      96.5 / 96.1
#   lr 4e-3    96.3 / 95.2      96.2 / 96.2      96.0 / 96.3
# Best 96.5 (2e-3, 12 epochs, after); tied: >= 95.5, of which the fewest
# epochs are 4 (2e-3 after 95.7, 4e-3 after 96.3). Chosen: lr 4e-3, 4 epochs,
# the post-BN feature (96.3). The held-out ids are easier than the test ids
# (4 cameras instead of 2; held-out ids are drawn one by one, so few of their
# family siblings, who differ in one modality only, are among them): the
# figures sit close together, hence the tie band. These runs predate commit
# d5d8f5d; with its library the chosen recipe scores 97.8 (not re-selected).
_base_ = [
    '../_base_/models/dmpt_vit-tiny.py',
    '../_base_/datasets/synthetic_rgbnt201_bs32_128x64.py',
    '../_base_/schedules/adam_cosine_60e.py',
    '../_base_/default_runtime.py',
]

val_fraction = 0.2  # 30 of the 150 training ids held out for the selection

model = dict(
    backbone=dict(pretrained='checkpoints/demo/standin_vit-tiny_rgb.safetensors'),
    # num_classes: 'auto' (the base's), i.e. the 150 training ids of the demo's
    # benchmark minus the 30 held out = 120.
    head=dict(test_feature='after'),  # the BNNeck output (eval statistics); selected above
)

train_dataloader = dict(dataset=dict(val_fraction=val_fraction))
val_dataloader = dict(dataset=dict(split='val', val_fraction=val_fraction))
# The test ids (split 'test'), used once by tools/demo.py.
test_dataloader = dict(dataset=dict(split='test'))

max_epochs = 4
optim_wrapper = dict(optimizer=dict(lr=4e-3))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True
    ),
    dict(
        type='CosineAnnealingLR',
        by_epoch=True,
        begin=1,
        end=max_epochs,
        T_max=max_epochs - 1,
        eta_min=1e-5,
        convert_to_iter_based=True,
    ),
]
# Validation on the held-out ids (never the test ids) after every epoch draws
# the curve; the last epoch is kept, nothing is selected by the curve.
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
default_hooks = dict(logger=dict(interval=25), checkpoint=dict(interval=max_epochs))
