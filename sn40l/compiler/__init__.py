"""Model graphs, tensor-parallel sharding, kernels, memory planning and the .pef artifact.

Pure: nothing here imports Ray. ``compile_model(CompileConfig(...))`` returns an
:class:`Artifact`; ``sn40l compile`` and ``sn40l inspect`` are the command line.
"""

from sn40l.compiler.models import PRESETS, ModelConfig, RopeScaling, preset
from sn40l.compiler.pef import Artifact
from sn40l.compiler.plan import CompileConfig, compile_plan
from sn40l.compiler.types import FusionLevel, Mode, Orchestration
from sn40l.compiler.validate import check_inputs


def compile_model(cfg: CompileConfig, model: ModelConfig | None = None) -> Artifact:
    """Compile ``cfg`` (or the explicit ``model`` shape, named ``cfg.model``) into an artifact."""
    plan = compile_plan(cfg, model)
    check_inputs(plan, origin=f"model {plan['model']['name']!r}")  # what a loader would refuse
    return Artifact(plan)


__all__ = ["PRESETS", "ModelConfig", "RopeScaling", "preset", "Artifact", "CompileConfig",
           "compile_plan", "compile_model", "FusionLevel", "Mode", "Orchestration"]
