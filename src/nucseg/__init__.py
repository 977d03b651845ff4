"""nucseg: nuclei instance segmentation in H&E histopathology."""

__version__ = "0.1.0"
