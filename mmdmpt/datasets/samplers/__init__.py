from .identity_sampler import IdentitySampler
from .seeding import SeededIndex, derive_seed, derive_seeds, seed_global_rngs, seeded_rngs

__all__ = [
    'IdentitySampler',
    'SeededIndex',
    'derive_seed',
    'derive_seeds',
    'seed_global_rngs',
    'seeded_rngs',
]
