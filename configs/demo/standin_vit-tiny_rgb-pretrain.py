# `make demo`, step 1: a toy stand-in for CLIP's visual pretraining. The tiny
# CLIP-architecture visual tower of configs/_base_/models/dmpt_vit-tiny.py is
# trained from scratch, fully, on the RGB images ONLY of a synthetic identity
# set whose ids are disjoint from the benchmark's (tools/demo.py writes it with
# --id-offset 1001 --seed 1 --family-size 1: every identity is its own family,
# so identities differ in RGB, the only modality this stage sees; 300 ids, 290
# for training). tools/model_converters/reid_to_open_clip.py then saves it in
# open_clip format (the text tower freshly initialised, never trained), and
# DMPT loads it through the same `pretrained` path as real CLIP weights.
#
# Held-out ids: 29 of the 290 training ids (val_fraction=0.1) are kept out of
# training; the 'val' split (one query per id and camera, the rest gallery,
# RGB only) measures the stand-in once, at the end. The benchmark's ids are
# never seen here.
#
# Selection of the learning rate and epochs (1 CPU thread, 163 iterations per
# epoch, the cosine schedule below scaled to each length). Criterion: the
# stand-in's own RGB retrieval mAP on the 29 held-out ids (pre-BN feature),
# as CLIP's pretraining is judged without the downstream task; it also keeps
# this stage independent of DMPT's. Rule, fixed before the runs: the highest
# held-out mAP; candidates within 1.0 mAP of it are tied, and among them the
# fewest epochs win (then the higher mAP). Held-out mAP / Rank-1:
#                8 epochs       12 epochs      16 epochs
#   lr 5e-4    89.3 / 84.5    90.6 / 85.3    90.6 / 85.3
#   lr 1e-3    90.3 / 83.6    90.8 / 85.3    90.4 / 85.3
# Best 90.8 (1e-3, 12 epochs); tied: >= 89.8. Chosen: lr 1e-3, 8 epochs
# (90.3). A re-run reproduced its figures exactly (5e-4, 8 epochs: 89.3495).
# These runs predate commit d5d8f5d; with its library the chosen recipe
# scores 90.8 (not re-selected).
# Not selected here: the tiny architecture and the pretraining set's design
# (every id distinct in RGB, the only modality seen), fixed by design; an
# earlier version of the demo had compared set designs on test ids.
_base_ = [
    '../_base_/models/dmpt_vit-tiny.py',
    '../_base_/datasets/synthetic_rgbnt201_bs32_128x64.py',
    '../_base_/schedules/adam_cosine_60e.py',
    '../_base_/default_runtime.py',
]

data_root = 'data/synthetic_demo/pretrain/'
modalities = ('rgb',)
val_fraction = 0.1  # 29 of the 290 training ids held out for the selection

model = dict(
    backbone=dict(
        frozen=False,
        num_modality_prompts=0,
        num_semantic_prompts=0,
        num_bind_prompts=0,
        bind_layers=(),
    ),
    # num_classes 'auto': 261 = 290 - 29 training ids; the test feature is the
    # tower's own (pre-BN) feature, the one DMPT's (a) row starts from.
    head=dict(test_feature='before'),
)

train_dataloader = dict(dataset=dict(val_fraction=val_fraction))
val_dataloader = dict(dataset=dict(split='val', val_fraction=val_fraction))
test_dataloader = None
test_cfg = None
test_evaluator = None

max_epochs = 8
optim_wrapper = dict(optimizer=dict(lr=1e-3))
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
# Validation on the held-out ids once, after the last epoch.
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=max_epochs))
# The exported tower must be complete: SafeCheckpointHook's trainable_only='auto'
# stores every tensor of a model whose backbone is not frozen.
