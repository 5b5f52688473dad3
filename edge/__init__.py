"""anpr-edge: roadside number-plate reading that reports only reference-list hits."""

__version__ = "0.1.0"
