"""Branching: pick a path by the day of the week; the other path is skipped and the join still runs."""

from datetime import datetime

from scheduler import DAG, BranchPythonOperator, EmptyOperator, TriggerRule, task


def choose(logical_date, **_):
    return "weekday_report" if logical_date.weekday() < 5 else "weekend_report"


with DAG(
    "branching",
    schedule="0 7 * * *",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["example"],
) as dag:
    pick = BranchPythonOperator(task_id="pick_report", python_callable=choose)

    @task
    def weekday_report(ds=None):
        return f"weekday report for {ds}"

    @task
    def weekend_report(ds=None):
        return f"weekend report for {ds}"

    join = EmptyOperator(task_id="join", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    pick >> [weekday_report(), weekend_report()] >> join
