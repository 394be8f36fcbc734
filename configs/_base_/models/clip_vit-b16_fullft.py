# Full fine-tuning baseline: the same CLIP ViT-B/16 and head as
# dmpt_vit-b16.py, every visual weight trainable, no prompts, no PromptIBind.
model = dict(
    type='MultiModalReID',
    backbone=dict(
        type='DMPTCLIPViT',
        clip_model='ViT-B-16',
        img_size=(256, 128),
        object_name='person',
        modality_words=None,
        template='a {modality} photo of a {object}.',
        num_modality_prompts=0,
        modality_prompt_layers=None,
        num_semantic_prompts=0,
        semantic_prompt_layers=None,
        num_bind_prompts=0,
        bind_layers=(),
        frozen=False,
        pretrained='checkpoints/ViT-B-16.pt',
        quick_gelu=None,
        with_cp=False,  # gradient checkpointing of the blocks
        compute_dtype=None,  # 'bf16': frozen tower kept in bf16 (tools/train.py --amp sets it)
        low_memory=False,  # checkpointed blocks, bf16 boundaries and tower (issue 16)
        torch_compile=False,  # or a dict of torch.compile arguments (tools/train.py --compile)
        feature='cls',
    ),
    head=dict(
        type='BNNeckHead',
        num_classes='auto',  # the training set's identities, read when the Runner starts
        loss_cls=dict(type='LabelSmoothCrossEntropy', label_smooth_val=0.1, loss_weight=0.25),
        loss_triplet=dict(type='TripletLoss', margin=None, loss_weight=1.0),
        test_feature='before',
        per_modality_loss=None,
        align_loss=None,
    ),
)
