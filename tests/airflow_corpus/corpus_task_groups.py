"""Task groups: TaskGroup as a context manager, nested groups, group default_args, @task_group."""

from datetime import datetime

from airflow import DAG
from airflow.decorators import task, task_group
from airflow.operators.bash import BashOperator
from airflow.operators.empty import EmptyOperator
from airflow.utils.task_group import TaskGroup

with DAG("corpus_task_groups", schedule=None, start_date=datetime(2024, 1, 1), tags=["corpus"],
         default_args={"retries": 1}) as dag:
    start = EmptyOperator(task_id="start")

    with TaskGroup("section_1", tooltip="Tasks for section 1", default_args={"retries": 2}) as section_1:
        task_1 = EmptyOperator(task_id="task_1")
        task_2 = BashOperator(task_id="task_2", bash_command="echo 1")
        task_3 = EmptyOperator(task_id="task_3")
        task_1 >> [task_2, task_3]

    with TaskGroup("section_2", tooltip="Tasks for section 2") as section_2:
        task_1 = EmptyOperator(task_id="task_1")
        with TaskGroup("inner_section_2", tooltip="Tasks for inner_section2") as inner_section_2:
            task_2 = BashOperator(task_id="task_2", bash_command="echo 1")
            task_3 = EmptyOperator(task_id="task_3")
            task_4 = EmptyOperator(task_id="task_4")
            [task_2, task_3] >> task_4

    @task_group(group_id="numbers")
    def numbers(start_at: int):
        @task
        def first(n):
            return n + 1

        @task
        def second(n):
            return n * 2

        return second(first(start_at))

    @task
    def show(value):
        print(f"numbers gave {value}")
        return value

    end = EmptyOperator(task_id="end")

    start >> section_1 >> section_2 >> end
    show(numbers(20)) >> end
