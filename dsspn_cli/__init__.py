"""dsspn: hierarchical semantic segmentation with Dynamic-Structured Semantic Propagation
Networks."""

__version__ = "0.1.0"
