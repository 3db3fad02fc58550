"""The Celery app the workers run: dagster-celery's own app and tasks, built from the executor's
config (distributed.celery_config, from the same SPARKLIO_CELERY_* environment), so the workers
and the executor share one definition of broker, backend, key prefix and transport options.

    celery -A sparklio_assets.celery_app worker -Q gpu -n gpu@%h --prefetch-multiplier=1      # GPU machines
    celery -A sparklio_assets.celery_app worker -Q dagster -n cpu@%h --prefetch-multiplier=1  # the rest

(`dagster-celery worker start -A sparklio_assets.celery_app -q gpu -n gpu` does the same.) Needs the
`[distributed]` extra. Workers load the jobs themselves from the reconstructable pointer each task
carries (distributed.DEFINITIONS_MODULE), so nothing here imports the definitions.
"""

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task, create_task

from .distributed import celery_config

app = make_app(CeleryExecutor.for_cli(**celery_config()).app_args())

execute_plan = create_task(app)
execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)
