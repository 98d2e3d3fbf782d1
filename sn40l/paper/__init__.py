"""``sn40l paper``: rerun the SN40L paper's experiments from the presets and write a report.

Prabhakar et al., "SambaNova SN40L: Scaling the AI Memory Wall with Dataflow and Composition of
Experts" (arXiv:2405.07518). :mod:`sn40l.paper.reference` holds the paper's own figures that
are known here (with where they come from); :mod:`sn40l.paper.experiments` reruns each
experiment over the compiler, the model runner and the CoE benchmark; :mod:`sn40l.paper.report`
writes ``report.md``, the PNG plots and the raw JSON.
"""
