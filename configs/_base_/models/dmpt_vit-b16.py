# DMPT on a frozen CLIP ViT-B/16 (OpenAI weights from a local file; never
# downloaded). Leaf configs set img_size / object_name per dataset; the
# modalities come from the config's `modalities` variable (its dataset file),
# the head's in_channels / num_modalities from the backbone and num_classes
# from the training set ('auto'). Every knob of the method is listed with its
# default; see docs/method.md for their meaning.
model = dict(
    type='MultiModalReID',
    backbone=dict(
        type='DMPTCLIPViT',
        clip_model='ViT-B-16',
        img_size=(256, 128),  # (H, W); 16x8 patch grid
        object_name='person',  # 'vehicle' for RGBNT100 / MSVR310 / WMVeID863
        modality_words=None,  # rgb: visible, nir: near-infrared, tir: thermal-infrared
        template='a {modality} photo of a {object}.',
        num_modality_prompts=4,  # n_msp per modality and layer
        modality_prompt_layers=None,  # None = all 12 layers
        num_semantic_prompts=8,  # n_sp per layer, shared by all modalities
        semantic_prompt_layers=None,  # None = all 12 layers
        num_bind_prompts=4,  # n_b per bind layer (PromptIBind)
        bind_layers=(5, 6, 7, 8, 9, 10),  # 0-based; each needs a previous and a next layer
        frozen=True,
        pretrained='checkpoints/ViT-B-16.pt',  # OpenAI archive, state dict or .safetensors
        quick_gelu=None,  # None = auto (QuickGELU for OpenAI weights)
        with_cp=False,  # gradient checkpointing of the blocks
        compute_dtype=None,  # 'bf16': frozen tower kept in bf16 (tools/train.py --amp sets it)
        low_memory=False,  # checkpointed blocks, bf16 boundaries and tower (issue 16)
        torch_compile=False,  # or a dict of torch.compile arguments (tools/train.py --compile)
        feature='cls',  # 'cls' | 'cls_proj' | 'cls_prompt'
    ),
    head=dict(
        type='BNNeckHead',
        num_classes='auto',  # the training set's identities, read when the Runner starts
        loss_cls=dict(type='LabelSmoothCrossEntropy', label_smooth_val=0.1, loss_weight=0.25),
        loss_triplet=dict(type='TripletLoss', margin=None, loss_weight=1.0),  # None = soft margin
        test_feature='before',  # 'before' | 'after' the BNNeck
        per_modality_loss=None,  # e.g. dict(weight=1.0, label_smooth_val=0.1)
        align_loss=None,  # e.g. dict(weight=0.1, mode='cosine')
    ),
)
