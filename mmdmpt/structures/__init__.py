"""Floor 1: the data contracts everything else imports (no import of other floors)."""

from .modalities import (
    DEFAULT_MODALITY_WORDS,
    MODALITIES,
    check_modalities,
    modality_words,
    parse_missing,
    stack_modality_mask,
)
from .reid_features import (
    FEATURE_KEYS,
    PER_SAMPLE_KEYS,
    REMOVAL_RULES,
    ReIDFeatures,
    check_feature_path,
    deduplicate_records,
    load_features,
    removal_rule_name,
    sample_record,
    save_features,
    split_query_gallery,
    to_int,
)

__all__ = [
    'MODALITIES',
    'DEFAULT_MODALITY_WORDS',
    'check_modalities',
    'modality_words',
    'parse_missing',
    'stack_modality_mask',
    'FEATURE_KEYS',
    'PER_SAMPLE_KEYS',
    'REMOVAL_RULES',
    'ReIDFeatures',
    'check_feature_path',
    'deduplicate_records',
    'load_features',
    'removal_rule_name',
    'sample_record',
    'save_features',
    'split_query_gallery',
    'to_int',
]
