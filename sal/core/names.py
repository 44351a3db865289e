"""The one place sal spells the names it stores: MLflow run tags and experiment records, Optuna study and
trial user attributes, run statuses, SAL's event metrics and the artifacts of a training run.

Every other module takes these names from here. MLflow stores and Optuna queues already hold runs and trials
under these exact strings, and reports, resumed sweeps and workers on other machines read them back by name:
a value here never changes (a new name is a new constant). Where one string names two things (``sal.spec``
on a trial and on a study), each has its own constant, of the same value.

Pure constants that import nothing, so any module of sal may import this one.
"""

from __future__ import annotations

# ---------------------------------------------------------------- MLflow run tags
# runs_frame() reads each back as the column ``tags.<name>``.
TAG_KIND = "sal.kind"  # what logged the run: train, ablation, study, cell, trial, compare, report
TAG_CELL = "sal.cell"  # the ablation cell (a compare's method) the run trained
TAG_CONTEXT = "sal.context"  # the ablation item's axis labels (e.g. lr=0.01); "" without axes
TAG_ABLATION = "sal.ablation"  # the ablation's name
TAG_STUDY = "sal.study"  # the study's name
TAG_TRIAL = "sal.trial"  # the Optuna trial number
TAG_TRIAL_STATE = "sal.trial_state"  # a study seed run: its trial pruned or complete
TAG_COMPARE = "sal.compare"  # the `sal compare` the run belongs to
TAG_STAGE = "sal.stage"  # its stage of that compare: tune or evaluate
TAG_STATUS = "sal.status"  # train()'s status of the run (STATUS_... below)
TAG_MESSAGE = "sal.message"  # why the run stopped, when it did not finish
TAG_DEVICE = "sal.device"  # the device the run trained on
TAG_N_PARAMS = "sal.n_params"  # the model's parameter count
TAG_KEY = "sal.key"  # the queue key of the (cell, seed) the run trained
TAG_BASELINE = "sal.baseline"  # the ablation's baseline cell
TAG_PAPER_TABLE = "sal.paper_table"  # the paper's table the ablation reproduces
TAG_PLAN_HASH = "sal.plan_hash"  # the hash of the analysis plan the run was launched with
TAG_SUMMARY = "sal.summary"  # "true" on a study's summary run
TAG_GROUP = "sal.group"  # a parent run: the group it stands for (ablation cell or study trial)
TAG_EVENTS = "sal.events"  # the run's SAL event signature (sal.metrics.events.signature)
TAG_COMPUTE_DTYPE = "sal.compute_dtype"  # the dtype of the forward pass (bfloat16 under autocast)
TAG_SEEDS_PER_MODEL = "sal.seeds_per_model"  # seeds trained as one packed model (1: alone); its time is the pack's

# ---------------------------------------------------------------- MLflow experiment records
# JSON values stored on an experiment by tracking.set_experiment_record (tags ``<name>.0``, ...)
RECORD_DEFINITION = "sal.definition"  # an ablation's definition: each cell's place -> its config_hash
RECORD_PLAN = "sal.plan"  # the analysis plan of the ablation's latest launch
RECORD_PLANS = "sal.plans"  # every plan ever launched, by hash
RECORD_COMPARE_DESIGN = "sal.compare_design"  # a compare's evaluation design and the looks taken

# ---------------------------------------------------------------- Optuna study user attributes
ATTR_QUEUE_KIND = "sal.kind"  # what launched the queue: ablation or study
ATTR_TRACKING_URI = "sal.tracking_uri"  # where the launcher's workers log (password masked)
# an ablation's queue: the values its runs' tags and its experiment's records carry, under the same names
ATTR_BASELINE = TAG_BASELINE
ATTR_PAPER_TABLE = TAG_PAPER_TABLE
ATTR_PLAN_HASH = TAG_PLAN_HASH
ATTR_DEFINITION = RECORD_DEFINITION
ATTR_PLAN = RECORD_PLAN
ATTR_METRIC = "sal.metric"  # the metric an ablation trial's value is
# a study's queue
ATTR_DEFINITION_HASH = "sal.definition_hash"  # see study.definition_hash
ATTR_STUDY_BASE = "sal.base"  # the study's base run spec
ATTR_STUDY_SPEC = "sal.spec"  # the whole StudySpec (what `sal worker` needs)

# ---------------------------------------------------------------- Optuna trial user attributes
# The key, cell, context, status and message of a trial are those of its runs' tags, under the same names:
# a worker reads a run's tags back as its trial's attrs.
ATTR_KEY = TAG_KEY  # the (cell, seed) the trial stands for
ATTR_CELL = TAG_CELL
ATTR_CONTEXT = TAG_CONTEXT
ATTR_STATUS = TAG_STATUS  # train()'s status, or why the queue closed the trial (duplicate, worker died, ...)
ATTR_MESSAGE = TAG_MESSAGE
ATTR_WORKER = "sal.worker"  # the worker that claimed the trial
ATTR_RUN = "sal.mlflow_run"  # the MLflow run of a finished trial
ATTR_MLFLOW_RUNS = "sal.mlflow_runs"  # the trial's MLflow run ids, set as soon as each is created (for the reaper)
ATTR_REPLACES = "sal.replaces"  # finished trials whose MLflow run is gone from the store; this one redoes them
ATTR_TRIAL_SPEC = "sal.spec"  # the flattened run spec the trial trains (a study's: seed and device left out)
ATTR_TAGS = "sal.tags"  # tags every run of an ablation trial carries
ATTR_PARENT_RUN = "sal.parent_run"  # the MLflow run grouping the trial's cell
ATTR_YOKE_KEY = "sal.yoke_key"  # a yoked control: its partner's queue key
ATTR_REUSED = "sal.reused"  # closed from a run a killed worker had logged, not trained again
ATTR_PRUNED = "sal.pruned"  # a study trial pruned between its seeds
ATTR_PER_SEED = "sal.per_seed"  # prefix: ``sal.per_seed.<metric>``, a study trial's score per seed

# ---------------------------------------------------------------- run statuses
# train()'s Result.status, the trial attr ATTR_STATUS and the run tag TAG_STATUS
STATUS_FINISHED = "finished"
STATUS_DIVERGED = "diverged"  # a NaN/inf loss stopped the run
STATUS_PRUNED = "pruned"
STATUS_FAILED = "failed"  # the run crashed
STATUS_RUNNING = "running"  # the tag of a run while it trains
STATUS_KILLED = "killed"  # the tag of a run whose worker died or was interrupted
RESULT_STATUSES = (STATUS_FINISHED, STATUS_DIVERGED)  # the runs that are results; the others are not

# ---------------------------------------------------------------- SAL's per-epoch metrics
METRIC_STRESS = "sal/stress"
EVENT_NOISE = "sal/noise"  # 1.0 in an epoch SAL injected noise, else 0.0
EVENT_DEFORM = "sal/deform"  # 1.0 in an epoch SAL deformed the weights
EVENT_REVERT = "sal/revert"  # 1.0 in an epoch SAL reverted a deformation
EVENT_METRICS = (EVENT_NOISE, EVENT_DEFORM, EVENT_REVERT)
METRIC_NOISE_STD = "sal/noise_std"  # the std of the noise injected that epoch
METRIC_NOISE_STD_MAX = "sal/noise_std_max"  # final metric: the largest noise std the run injected

# ---------------------------------------------------------------- artifacts of a training run
ARTIFACT_SPEC = "spec.yaml"  # the resolved run spec
ARTIFACT_HISTORY = "history.csv"  # the per-epoch metrics
ARTIFACT_PER_CLASS = "per_class.csv"  # test precision, recall, f1 and support per class
ARTIFACT_WEIGHTS = "weights.pt"  # the final state_dict; torch.load(..., weights_only=True)
ARTIFACT_TRAJECTORY = "trajectory.pt"  # {"epochs": (T,), "weights": (T, d)} snapshots
