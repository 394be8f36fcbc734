# DMPT on RGBNT201 with model selection on held-out TRAINING ids: 10 % of the
# 171 training identities form a validation query/gallery split ('val'), the
# best epoch by its mAP is kept (save_best), and the test set is only used by
# tools/test.py at the end. The default configs report the last epoch instead.
_base_ = ['./dmpt_vitb_rgbnt201.py']

val_fraction = 0.1
train_dataloader = dict(dataset=dict(val_fraction=val_fraction))
val_dataloader = dict(dataset=dict(split='val', val_fraction=val_fraction))
default_hooks = dict(checkpoint=dict(save_best='reid/mAP', rule='greater'))
train_cfg = dict(val_interval=5)
