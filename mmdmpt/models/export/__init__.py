"""The test-mode model as a static graph, for exporters (ONNX)."""

from .exportable_reid import ExportableReID, preprocessor_stats

__all__ = ['ExportableReID', 'preprocessor_stats']
