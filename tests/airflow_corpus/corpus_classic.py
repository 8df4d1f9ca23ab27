"""Classic operators: default_args, BashOperator templates, PythonOperator, a list of downstream tasks."""

from datetime import datetime, timedelta
from textwrap import dedent

from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.operators.python import PythonOperator

default_args = {
    "owner": "data-team",
    "depends_on_past": False,
    "retries": 1,
    "retry_delay": timedelta(minutes=5),
}


def report(ds, **kwargs):
    print(f"reporting for {ds}, run {kwargs['run_id']}")
    return {"day": ds, "rows": 3}


with DAG(
    "corpus_classic",
    default_args=default_args,
    description="Print the date, wait, then report",
    schedule=timedelta(days=1),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["corpus"],
) as dag:
    dag.doc_md = "A DAG in the classic style: operators wired with `>>`."

    print_date = BashOperator(task_id="print_date", bash_command="date -u +%Y && echo {{ ds }}")
    wait = BashOperator(task_id="wait", depends_on_past=False, bash_command="sleep 0", retries=2)
    wait.doc_md = dedent("""\
        #### Wait
        Stands for a step that takes some time.
        """)
    templated = BashOperator(
        task_id="templated",
        depends_on_past=False,
        bash_command=dedent("""
            {% for i in range(2) %}
                echo "{{ ds }} plus seven is {{ macros.ds_add(ds, 7) }} ({{ params.my_param }})"
            {% endfor %}
        """),
        params={"my_param": "a parameter"},
    )
    summary = PythonOperator(task_id="report", python_callable=report)

    print_date >> [wait, templated] >> summary
