"""ivf_ros: visible-infrared image fusion and detection for seeing at night."""

__version__ = '0.1.0'
