"""Cross-DAG: TriggerDagRunOperator with conf (waiting for completion), ExternalTaskSensor, LatestOnlyOperator."""

from datetime import datetime

from airflow import DAG
from airflow.decorators import task
from airflow.operators.empty import EmptyOperator
from airflow.operators.latest_only import LatestOnlyOperator
from airflow.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sensors.external_task import ExternalTaskSensor

with DAG("corpus_trigger_target", schedule=None, start_date=datetime(2024, 1, 1), tags=["corpus"]) as target:

    @task
    def receive(**context):
        message = context["dag_run"].conf.get("message")
        print(f"received {message!r}")
        return message

    receive()

with DAG("corpus_controller", schedule=None, start_date=datetime(2024, 1, 1), tags=["corpus"]) as controller:
    trigger = TriggerDagRunOperator(
        task_id="trigger",
        trigger_dag_id="corpus_trigger_target",
        trigger_run_id="triggered_{{ ds_nodash }}",
        logical_date="{{ logical_date.isoformat() }}",
        conf={"message": "hello from {{ dag.dag_id }}"},
        wait_for_completion=True,
        poke_interval=0.2,
    )
    wait_for_target = ExternalTaskSensor(
        task_id="wait_for_target",
        external_dag_id="corpus_trigger_target",
        external_task_id="receive",
        poke_interval=0.2,
        timeout=60,
        mode="poke",
    )
    latest_only = LatestOnlyOperator(task_id="latest_only")
    notify = EmptyOperator(task_id="notify")
    trigger >> wait_for_target >> latest_only >> notify
