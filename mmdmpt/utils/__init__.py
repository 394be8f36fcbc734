from .io import atomic_write_path

__all__ = ['atomic_write_path']
