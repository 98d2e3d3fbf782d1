"""sn40l: an emulator of SambaNova SN40L RDU clusters on Ray.

Subpackages: ``hardware`` (profiles), ``socket`` (emulated device), ``collectives`` (P2P and
AllReduce), ``cluster`` (bring-up on Ray), ``compiler`` (models to .pef), ``scheduler``
(Slurm-like), ``coe`` (Composition of Experts). Everything lives under this one package so that
``sn40l.socket`` never shadows the standard library's ``socket``.
"""

__version__ = "0.1.0"
