# Adam 3.5e-4, linear warm-up for 5 epochs, cosine decay to the end (60 epochs).
max_epochs = 60
warmup_epochs = 5

# A NaN / inf loss stops training with an error naming the iteration and the
# loss term, before the optimizer step (on_nonfinite='skip' skips and counts
# such steps instead; max_skips bounds them). `tools/train.py --amp` swaps in
# AmpNonFiniteCheckOptimWrapper, which keeps the check. With the fused Adam
# (one kernel for all parameters) the check reads no device value on the
# host during the step: a non-finite step is skipped on the device (the
# optimizer's found_inf) and reported once the Runner reads the losses for
# logging (see mmdmpt/engine/optim_wrappers.py).
optim_wrapper = dict(
    type='NonFiniteCheckOptimWrapper',
    on_nonfinite='raise',
    max_skips=None,
    optimizer=dict(type='Adam', lr=3.5e-4, weight_decay=1e-4, fused=True),
)

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True,
    ),
    dict(
        type='CosineAnnealingLR',
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        T_max=max_epochs - warmup_epochs,
        eta_min=1e-6,
        convert_to_iter_based=True,
    ),
]

train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=10)
val_cfg = dict()
test_cfg = dict()

# The learning rate above is for the config's total batch; enable with
# `--auto-scale-lr` when training with another number of GPUs.
auto_scale_lr = dict(base_batch_size=64, enable=False)
