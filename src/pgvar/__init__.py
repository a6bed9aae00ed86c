"""pgvar: policy-gradient estimators and their variance, exact where mathematics allows."""

__version__ = "0.1.0"
