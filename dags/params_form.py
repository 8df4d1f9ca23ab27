"""A manually triggered DAG with typed Params: the web UI builds its trigger form from them."""

from datetime import datetime

from scheduler import DAG, BashOperator, Param, task

with DAG(
    "params_form",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    tags=["example", "params"],
    params={
        "environment": Param("staging", type="string", enum=["staging", "production"],
                             description="Where to deploy"),
        "replicas": Param(2, type="integer", minimum=1, maximum=10, description="How many copies to run"),
        "dry_run": Param(True, type="boolean", description="Only print what would happen"),
        "note": Param("", type="string", maxLength=200, description="Free text for the log"),
    },
) as dag:

    @task
    def plan(params=None):
        action = "would deploy" if params["dry_run"] else "deploying"
        print(f"{action} {params['replicas']} replicas to {params['environment']}")
        return params["replicas"]

    announce = BashOperator(
        task_id="announce",
        bash_command="echo 'deploy of {{ params.replicas }} replicas to {{ params.environment }}: {{ params.note or \"no note\" }}'",
    )
    plan() >> announce
