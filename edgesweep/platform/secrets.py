"""Credentials never written: what stops Ray Tune from copying them into log files.

Ray Tune (2.60, ``ray/tune/execution/class_cache.py``) copies ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SECURITY_TOKEN`` and ``AWS_SESSION_TOKEN`` from the driver's
environment into the runtime environment of every trainable actor, and Ray's runtime-env agent
writes runtime environments into its log (``runtime_env_agent.log``, mode 0644): a secret in
the driver's environment ends up on disk, once per trial. edgesweep's trials never need that
copy — on a local cluster the workers inherit the credentials from the raylet's environment; on
a cluster they use the cluster's own credential chain (instance profile, files, env) — so the
propagation list is emptied of credentials before Tune starts. The driver keeps its own
environment (it writes to storage itself). ``tests/test_secrets.py`` plants a secret and greps
every file the sweep and Ray wrote.
"""

from __future__ import annotations

#: Environment variables that are credentials: never copied into a runtime environment.
SECRET_ENV_VARS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN",
                             "AWS_SESSION_TOKEN", "WANDB_API_KEY", "MLFLOW_TRACKING_TOKEN",
                             "MLFLOW_TRACKING_PASSWORD", "HF_TOKEN"})


def keep_credentials_out_of_runtime_envs() -> list[str]:
    """Remove credential variables from Tune's driver → trainable propagation list; returns
    the names removed. Raises RuntimeError if this Ray version keeps the list elsewhere (a
    silent no-op here would write secrets again)."""
    from ray.tune.execution import class_cache

    names = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if not isinstance(names, (set, frozenset)):
        raise RuntimeError("ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE not found in this Ray "
                           "version: edgesweep cannot stop Tune from copying credentials into runtime "
                           "environments (and so into Ray's logs); refusing to start")
    removed = sorted(names & SECRET_ENV_VARS)
    class_cache.ENV_VARS_TO_PROPAGATE = frozenset(names) - SECRET_ENV_VARS
    return removed
