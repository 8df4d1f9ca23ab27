"""Data-aware scheduling: a producer updates datasets (outlets), a consumer is scheduled on them."""

from datetime import datetime

from airflow import DAG
from airflow.datasets import Dataset
from airflow.decorators import task
from airflow.operators.bash import BashOperator

orders = Dataset("s3://corpus-bucket/orders.parquet")
customers = Dataset("s3://corpus-bucket/customers.parquet")

with DAG("corpus_assets_producer", schedule=None, start_date=datetime(2024, 1, 1), tags=["corpus"]):
    BashOperator(task_id="write_orders", bash_command="echo orders", outlets=[orders])

    @task(outlets=[customers])
    def write_customers():
        return "customers"

    write_customers()

with DAG("corpus_assets_consumer", schedule=[orders, customers], start_date=datetime(2024, 1, 1),
         tags=["corpus"]):

    @task
    def report(**context):
        print(f"run {context['run_id']} of type {context['dag_run'].run_type}")
        return context["dag_run"].run_type

    report()
