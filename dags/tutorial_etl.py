"""A classic ETL: Bash and Python operators, templated with the run's dates."""

from datetime import datetime, timedelta

from scheduler import DAG, BashOperator, PythonOperator

default_args = {
    "owner": "data-team",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
}


def transform(ds, ti, **_):
    """Read what extract printed (its XCom) and summarise it."""
    line = ti.xcom_pull(task_ids="extract")
    rows = [int(x) for x in line.split(",")]
    print(f"{ds}: {len(rows)} rows, total {sum(rows)}")
    return {"date": ds, "rows": len(rows), "total": sum(rows)}


with DAG(
    "tutorial_etl",
    description="Extract with Bash, transform and load with Python",
    schedule="0 6 * * *",
    start_date=datetime(2024, 1, 1),
    timezone="Europe/Berlin",
    catchup=False,
    default_args=default_args,
    tags=["example", "etl"],
    doc_md=__doc__,
) as dag:
    extract = BashOperator(
        task_id="extract",
        bash_command="echo 'extracting {{ ds }} (interval {{ data_interval_start }} to {{ data_interval_end }})' && echo 3,5,8",
    )
    transform_task = PythonOperator(task_id="transform", python_callable=transform)
    load = BashOperator(
        task_id="load",
        bash_command="echo 'loaded {{ ti.xcom_pull(task_ids=\"transform\")[\"rows\"] }} rows for {{ ds_nodash }}'",
    )
    extract >> transform_task >> load
