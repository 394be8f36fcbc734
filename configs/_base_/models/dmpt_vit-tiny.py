# DMPT on a tiny CLIP-architecture ViT (4 layers, width 128, patch 16) for the
# demo and quick experiments; the structure is the ViT-B/16 one scaled down.
_base_ = ['./dmpt_vit-b16.py']

tiny_clip = dict(
    _delete_=True,  # replaces the base's model name
    embed_dim=64,
    vision_cfg=dict(width=128, layers=4, heads=4, patch_size=16),
    text_cfg=dict(width=64, layers=4, heads=2, context_length=77, vocab_size=49408),
)

model = dict(
    backbone=dict(
        clip_model=tiny_clip,
        img_size=(128, 64),
        num_modality_prompts=4,
        num_semantic_prompts=8,
        num_bind_prompts=4,
        bind_layers=(1, 2),
        pretrained=None,
    ),
)
