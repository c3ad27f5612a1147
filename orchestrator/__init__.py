"""liveorch: keeps MetaStudio smart-live jobs on air, unattended."""

__version__ = "0.1.0"
