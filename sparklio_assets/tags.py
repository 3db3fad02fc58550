"""The Dagster run tags this project writes and reads: one vocabulary for the assets, the
sequencer, the liveness lease, the sensors and the API."""

JOB_TAG = "sparklio/job_id"  # every run of a job, whoever started it: how the API finds them
CHAIN_TAG = "sparklio/chain"  # AUTO: the chain sensor carries the job on (campaigns, schedule)
AUTO = "auto"
CHAIN_ID_TAG = "sparklio/chain_id"  # the storyboard run that started this pass over the job
CAMPAIGN_TAG = "sparklio/campaign"  # the campaign file a job came from
ROW_TAG = "sparklio/campaign_row"  # its line in that file (informational: not part of the job's id)
SCENE_TAG = "dagster/partition/scene"  # Dagster's own tag for the scene dimension of a scene run
CARRIED_TAGS = (JOB_TAG, CHAIN_TAG, CAMPAIGN_TAG)  # passed on from a run to the runs that follow it
LEASE_TAG = "sparklio/lease"  # the job lease a run was started under (liveness.py)
GPU_WAIT_TAG = "sparklio/waiting_for_gpu_worker"  # why a scene step waits ("" once the worker is back)
REMAKE_TAG = "sparklio/remake"  # UI: a scene re-made from the Dagster UI; the chain sensor re-assembles
UI = "ui"
