"""A whole study from one file: models x seeds x folds x variants, compared against a baseline.

``study.yaml`` (:mod:`~cxrlab.study.schema`) -> the plan (:mod:`~cxrlab.study.planner`) -> cells
run by a launcher (:mod:`~cxrlab.study.launchers`: this machine or SLURM) through
:func:`cxrlab.training.cv.run_cell` (:mod:`~cxrlab.study.runner`) -> the results section
(:mod:`~cxrlab.study.report`). Each cell is an ordinary run directory.
"""

from cxrlab.study.launchers import LocalLauncher, SlurmLauncher, run_cell_job
from cxrlab.study.planner import Cell, Plan, make_plan
from cxrlab.study.runner import StudyResult, run_study
from cxrlab.study.schema import StudyConfig, load_study, validate_study

__all__ = [
    "Cell",
    "LocalLauncher",
    "Plan",
    "SlurmLauncher",
    "StudyConfig",
    "StudyResult",
    "load_study",
    "make_plan",
    "run_cell_job",
    "run_study",
    "validate_study",
]
